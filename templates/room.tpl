% title = room_name or 'Room %d' % room
% rebase('base', title=title)
<div id="chat" class="chat" data-room="{{room}}" data-user="{{user}}">
  <div id="banner" class="banner" role="alert" hidden>
    <span id="banner-text">No connection to the router.</span>
    <button id="reconnect" type="button" class="link">Try now</button>
  </div>
  <div class="room-head">
    <a href="/" aria-label="All rooms">&larr; Rooms</a>
    <h1 id="room-name">{{title}}</h1>
    <span id="state" class="state" role="status" aria-live="polite">connecting…</span>
    <button id="search-open" type="button" class="link" aria-controls="search" aria-expanded="false">Search</button>
    <button id="name-open" type="button" class="link" hidden>Name room</button>
    <button id="clear" type="button" class="link" hidden>Clear room</button>
  </div>
  <p id="topic" class="topic"{{!'' if topic else ' hidden'}}>{{topic}}</p>
  <form id="name-form" class="card tool" hidden>
    <label>Room name <input id="name-input" maxlength="{{room_name_max}}" value="{{room_name}}" placeholder="Room {{room}}"></label>
    <label>Topic <input id="topic-input" maxlength="{{room_topic_max}}" value="{{topic}}"></label>
    <button type="submit">Save on every router</button>
  </form>
  <form id="search" class="tool search" role="search" hidden>
    <label for="search-input" class="visually-hidden">Search this room</label>
    <input id="search-input" type="search" maxlength="100" placeholder="Search this room" enterkeyhint="search">
    <button type="submit">Search</button>
  </form>
  <div id="search-results" class="search-results" hidden>
    <p id="search-note" class="meta" role="status"></p>
    <ol id="results" class="results"></ol>
  </div>
  <details class="online"><summary>Online: <span id="online-count">0</span></summary>
    <ul id="online"></ul></details>
  <p id="start" class="start" hidden>This is where the room's history begins.</p>
  <button id="older" type="button" class="link">Load older messages</button>
  <ol id="messages" class="messages" aria-live="polite" aria-label="Messages"></ol>
  <button id="newer" type="button" class="link" hidden>Load newer messages</button>
  <a id="latest" class="latest" href="/room/{{room}}" hidden>Back to the latest messages</a>
  <ol id="outbox" class="messages outbox" aria-label="Messages being sent"></ol>
  <p id="error" class="error" role="alert" hidden></p>
  <div id="unsent" class="unsent" role="alert" hidden>
    <span id="unsent-text"></span>
    <button id="retry" type="button">Retry</button>
  </div>
  <form id="send" class="composer" autocomplete="off">
    <label for="text" class="visually-hidden">Message</label>
    <textarea id="text" rows="1" maxlength="{{text_max}}" placeholder="Message {{title}}" enterkeyhint="send"></textarea>
    <button type="submit">Send</button>
  </form>
</div>
<script src="/static/attention.js"></script>
<script src="/static/chat.js"></script>
