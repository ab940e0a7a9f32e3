% rebase('base', title=_('Rooms'))
% # Words around a badge's count, for screen readers only.
% hidden = lambda words: '<span class="visually-hidden">' + _escape(words) + '</span>' if words else ''
<h1>{{_('Rooms')}}</h1>
<p>{{!_('Logged in as %(name)s.') % {'name': '<strong>' + _escape(user) + '</strong>'} }} <span id="live" class="meta" role="status"></span></p>
<ul class="rooms" id="rooms" data-unread-max="{{unread_max}}">
% for r in rooms:
%   unread = r['unread']
  <li class="room{{' has-unread' if unread else ''}}" data-room="{{r['n']}}" data-unread="{{unread}}">
    <div class="room-top">
      <a href="/room/{{r['n']}}">{{r['name'] or _('Room %(num)d') % {'num': r['n']} }}</a>
%   if unread:
%     words = ngettext('%(num)s unread', '%(num)s unread', unread).partition('%(num)s')
      <span class="badge">{{!hidden(words[0])}}{{str(unread_max - 1) + '+' if unread >= unread_max else unread}}{{!hidden(words[2])}}</span>
%   end
    </div>
%   if r['topic']:
    <p class="topic">{{r['topic']}}</p>
%   end
%   if r['last']:
    <p class="preview"><span class="who">{{r['last']['author']}}:</span> {{r['last']['text']}}</p>
%   else:
    <p class="preview empty">{{_('No messages yet.')}}</p>
%   end
    <span class="meta">{{ngettext('%(num)d online', '%(num)d online', r['online']) % {'num': r['online']} }}</span>
  </li>
% end
</ul>
<h2 id="direct-title">{{_('Direct messages')}}</h2>
<ul class="rooms direct" id="direct" aria-labelledby="direct-title">
% for d in direct:
%   unread = d['unread']
  <li class="room{{' has-unread' if unread else ''}}" data-peer="{{d['peer']}}" data-unread="{{unread}}">
    <div class="room-top">
      <a href="/dm/{{d['peer']}}">{{d['peer']}}</a>
%   if unread:
%     words = ngettext('%(num)s unread', '%(num)s unread', unread).partition('%(num)s')
      <span class="badge">{{!hidden(words[0])}}{{str(unread_max - 1) + '+' if unread >= unread_max else unread}}{{!hidden(words[2])}}</span>
%   end
    </div>
    <p class="preview"><span class="who">{{d['last']['author']}}:</span> {{d['last']['text']}}</p>
%   if d['blocked']:
    <span class="meta">{{_('Blocked')}}</span>
%   end
  </li>
% end
</ul>
<p id="direct-empty" class="meta"{{!' hidden' if direct else ''}}>{{_('No direct messages yet. Open one from a name in a room, or here:')}}</p>
<form id="write-to" class="write-to" method="get" action="/dm">
  <label for="write-to-name">{{_('Write to')}}</label>
  <input id="write-to-name" name="to" maxlength="32" autocomplete="off" placeholder="{{_('a username')}}" required>
  <button type="submit">{{_('Open')}}</button>
</form>
<p class="meta privacy">{{_('Direct messages are hidden from other users, not from whoever runs a router or holds the mesh key (no end-to-end encryption on plain HTTP).')}}</p>
<fieldset id="attention" class="attention" data-sound="{{'1' if attention['sound'] else '0'}}" data-vibrate="{{'1' if attention['vibrate'] else '0'}}">
  <legend>{{_('On a mention of my name or a direct message')}}</legend>
  <label class="check"><input type="checkbox" id="attention-sound"{{!' checked' if attention['sound'] else ''}}> {{_('Play a sound')}}</label>
  <label class="check"><input type="checkbox" id="attention-vibrate"{{!' checked' if attention['vibrate'] else ''}}> {{_('Vibrate')}}</label>
  <p class="meta">{{_('Kept on the routers: the same on every router you use.  The page must be open (there are no push notifications without the internet).')}}</p>
</fieldset>
<p><a href="/password">{{_('Change password')}}</a></p>
<form method="post" action="/logout">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <button type="submit" class="link">{{_('Log out')}}</button>
</form>
<script src="/static/attention.js"></script>
<script src="/static/rooms.js"></script>
