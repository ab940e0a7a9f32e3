% rebase('base', title='Room %d' % room)
<div id="chat" class="chat" data-room="{{room}}" data-user="{{user}}">
  <div id="banner" class="banner" role="alert" hidden>
    <span id="banner-text">No connection to the router.</span>
    <button id="reconnect" type="button" class="link">Try now</button>
  </div>
  <div class="room-head">
    <a href="/" aria-label="All rooms">&larr; Rooms</a>
    <h1>Room {{room}}</h1>
    <span id="state" class="state" role="status" aria-live="polite">connecting…</span>
    <button id="clear" type="button" class="link" hidden>Clear room</button>
  </div>
  <details class="online"><summary>Online: <span id="online-count">0</span></summary>
    <ul id="online"></ul></details>
  <p id="start" class="start" hidden>This is where the room's history begins.</p>
  <button id="older" type="button" class="link">Load older messages</button>
  <ol id="messages" class="messages" aria-live="polite" aria-label="Messages"></ol>
  <ol id="outbox" class="messages outbox" aria-label="Messages being sent"></ol>
  <p id="error" class="error" role="alert" hidden></p>
  <div id="unsent" class="unsent" role="alert" hidden>
    <span id="unsent-text"></span>
    <button id="retry" type="button">Retry</button>
  </div>
  <form id="send" class="composer" autocomplete="off">
    <label for="text" class="visually-hidden">Message</label>
    <textarea id="text" rows="1" maxlength="{{text_max}}" placeholder="Message room {{room}}" enterkeyhint="send"></textarea>
    <button type="submit">Send</button>
  </form>
</div>
<script src="/static/chat.js"></script>
