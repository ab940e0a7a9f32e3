"""The mesh node: records, clock, store, wire format, protocol, transport.

Nothing in this package imports bottle: the web app drives the node, never the
other way round.
"""
