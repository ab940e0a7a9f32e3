"""The web app: Bottle routes, accounts, sessions, the WebSocket hub, config."""
