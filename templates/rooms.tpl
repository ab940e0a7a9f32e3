% rebase('base', title='Rooms')
<h1>Rooms</h1>
<p>Logged in as <strong>{{user}}</strong>.</p>
<ul class="rooms">
% for r in rooms:
  <li><a href="/room/{{r['n']}}">Room {{r['n']}}</a>
    <span class="meta">{{r['count']}} messages · {{r['online']}} online</span></li>
% end
</ul>
<p><a href="/password">Change password</a></p>
<form method="post" action="/logout">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <button type="submit" class="link">Log out</button>
</form>
