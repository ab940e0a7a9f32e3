% rebase('base', title='Rooms')
<h1>Rooms</h1>
<p>Logged in as <strong>{{user}}</strong>. <span id="live" class="meta" role="status"></span></p>
<ul class="rooms" id="rooms" data-unread-max="{{unread_max}}">
% for r in rooms:
%   unread = r['unread']
  <li class="room{{' has-unread' if unread else ''}}" data-room="{{r['n']}}" data-unread="{{unread}}">
    <div class="room-top">
      <a href="/room/{{r['n']}}">{{r['name'] or 'Room %d' % r['n']}}</a>
%   if unread:
      <span class="badge">{{str(unread_max - 1) + '+' if unread >= unread_max else unread}}<span class="visually-hidden"> unread</span></span>
%   end
    </div>
%   if r['topic']:
    <p class="topic">{{r['topic']}}</p>
%   end
%   if r['last']:
    <p class="preview"><span class="who">{{r['last']['author']}}:</span> {{r['last']['text']}}</p>
%   else:
    <p class="preview empty">No messages yet.</p>
%   end
    <span class="meta">{{r['online']}} online</span>
  </li>
% end
</ul>
<p><a href="/password">Change password</a></p>
<form method="post" action="/logout">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <button type="submit" class="link">Log out</button>
</form>
<script src="/static/rooms.js"></script>
