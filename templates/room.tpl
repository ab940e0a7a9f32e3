% rebase('base', title='Room %d' % room)
<div id="chat" class="chat" data-room="{{room}}" data-user="{{user}}">
  <div class="room-head">
    <a href="/" aria-label="All rooms">&larr; Rooms</a>
    <h1>Room {{room}}</h1>
    <span id="state" class="state" role="status" aria-live="polite">connecting…</span>
    <button id="clear" type="button" class="link" hidden>Clear room</button>
  </div>
  <details class="online"><summary>Online: <span id="online-count">0</span></summary>
    <ul id="online"></ul></details>
  <button id="older" type="button" class="link">Load older messages</button>
  <ol id="messages" class="messages" aria-live="polite" aria-label="Messages"></ol>
  <p id="error" class="error" role="alert" hidden></p>
  <form id="send" class="composer" autocomplete="off">
    <label for="text" class="visually-hidden">Message</label>
    <textarea id="text" rows="1" maxlength="2000" placeholder="Message room {{room}}" enterkeyhint="send"></textarea>
    <button type="submit">Send</button>
  </form>
</div>
<script src="/static/chat.js"></script>
