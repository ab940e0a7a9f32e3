<!doctype html>
<html lang="{{lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{{title}} · {{_('Community Chat')}}</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="apple-touch-icon" href="/static/icon-192.png">
<link rel="manifest" href="/static/manifest.webmanifest">
<meta name="theme-color" content="#0b6e4f">
{{!strings_block()}}
</head>
<body>
<header class="bar">
  <a class="brand" href="/">{{_('Community Chat')}}</a>
  <span class="router" title="{{_('the router serving this page')}}">{{node_name}}</span>
</header>
<main>
{{!base}}
</main>
</body>
</html>
