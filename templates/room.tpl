% title = room_name or _('Room %(num)d') % {'num': room}
% rebase('base', title=title)
<div id="chat" class="chat" data-room="{{room}}" data-user="{{user}}" data-csrf="{{csrf}}"{{!' data-max-upload="%d"' % max_upload if max_upload else ''}}>
  <div id="banner" class="banner" role="alert" hidden>
    <span id="banner-text">{{_('No connection to the router.')}}</span>
    <button id="reconnect" type="button" class="link">{{_('Try now')}}</button>
  </div>
  <div class="room-head">
    <a href="/" aria-label="{{_('All rooms')}}">&larr; {{_('Rooms')}}</a>
    <h1 id="room-name">{{title}}</h1>
    <span id="state" class="state" role="status" aria-live="polite">{{_('connecting…')}}</span>
    <button id="search-open" type="button" class="link" aria-controls="search" aria-expanded="false">{{_('Search')}}</button>
    <button id="name-open" type="button" class="link" hidden>{{_('Name room')}}</button>
    <button id="clear" type="button" class="link" hidden>{{_('Clear room')}}</button>
  </div>
  <p id="topic" class="topic"{{!'' if topic else ' hidden'}}>{{topic}}</p>
  <form id="name-form" class="card tool" hidden>
    <label>{{_('Room name')}} <input id="name-input" maxlength="{{room_name_max}}" value="{{room_name}}" placeholder="{{_('Room %(num)d') % {'num': room} }}"></label>
    <label>{{_('Topic')}} <input id="topic-input" maxlength="{{room_topic_max}}" value="{{topic}}"></label>
    <button type="submit">{{_('Save on every router')}}</button>
  </form>
  <form id="search" class="tool search" role="search" hidden>
    <label for="search-input" class="visually-hidden">{{_('Search this room')}}</label>
    <input id="search-input" type="search" maxlength="100" placeholder="{{_('Search this room')}}" enterkeyhint="search">
    <button type="submit">{{_('Search')}}</button>
  </form>
  <div id="search-results" class="search-results" hidden>
    <p id="search-note" class="meta" role="status"></p>
    <ol id="results" class="results"></ol>
  </div>
  <details class="online"><summary>{{!_('Online: %(count)s') % {'count': '<span id="online-count">0</span>'} }}</summary>
    <ul id="online"></ul></details>
  <p id="start" class="start" hidden>{{_("This is where the room's history begins.")}}</p>
  <button id="older" type="button" class="link">{{_('Load older messages')}}</button>
  <ol id="messages" class="messages" aria-live="polite" aria-label="{{_('Messages')}}"></ol>
  <button id="newer" type="button" class="link" hidden>{{_('Load newer messages')}}</button>
  <a id="latest" class="latest" href="/room/{{room}}" hidden>{{_('Back to the latest messages')}}</a>
  <ol id="outbox" class="messages outbox" aria-label="{{_('Messages being sent')}}"></ol>
  <p id="error" class="error" role="alert" hidden></p>
  <div id="unsent" class="unsent" role="alert" hidden>
    <span id="unsent-text"></span>
    <button id="retry" type="button">{{_('Retry')}}</button>
  </div>
  <form id="send" class="composer" autocomplete="off">
    <label for="text" class="visually-hidden">{{_('Message')}}</label>
    % if max_upload:
    <label class="attach" title="{{_('Photos are made smaller on your phone before they are sent, which also removes their location.')}}">
      <input id="attach-file" type="file" class="visually-hidden" multiple>
      <span aria-hidden="true">+</span><span class="visually-hidden">{{_('Attach a photo or file')}}</span>
    </label>
    % end
    <textarea id="text" rows="1" maxlength="{{text_max}}" placeholder="{{_('Message %(name)s') % {'name': title} }}" enterkeyhint="send"></textarea>
    <button type="submit">{{_('Send')}}</button>
  </form>
</div>
<script src="/static/attention.js"></script>
<script src="/static/attach.js"></script>
<script src="/static/chat.js"></script>
