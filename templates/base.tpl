<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{{title}} · Community Chat</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
</head>
<body>
<header class="bar">
  <a class="brand" href="/">Community Chat</a>
  <span class="router" title="the router serving this page">{{node_name}}</span>
</header>
<main>
{{!base}}
</main>
</body>
</html>
