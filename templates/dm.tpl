% title = peer
% rebase('base', title=title)
<div id="chat" class="chat dm" data-room="0" data-ws="/ws/dm/{{peer}}" data-peer="{{peer}}" data-user="{{user}}" data-csrf="{{csrf}}"{{!' data-max-upload="%d"' % max_upload if max_upload else ''}}>
  <div id="banner" class="banner" role="alert" hidden>
    <span id="banner-text">{{_('No connection to the router.')}}</span>
    <button id="reconnect" type="button" class="link">{{_('Try now')}}</button>
  </div>
  <div class="room-head">
    <a href="/" aria-label="{{_('All rooms')}}">&larr; {{_('Rooms')}}</a>
    <h1 id="room-name">{{peer}}</h1>
    <span id="state" class="state" role="status" aria-live="polite">{{_('connecting…')}}</span>
    <button id="search-open" type="button" class="link" aria-controls="search" aria-expanded="false">{{_('Search')}}</button>
    <button id="block" type="button" class="link" aria-pressed="{{'true' if blocked else 'false'}}">{{_('Unblock') if blocked else _('Block')}}</button>
  </div>
  <p id="privacy" class="privacy">{{!_("Direct messages with %(name)s. %(private)s, not from whoever runs a router or holds the mesh key: messages, pictures and files travel between routers and are stored on them unencrypted (a browser offers no encryption to a page on plain HTTP). They are deleted with the room messages, after the router's retention time.") % {'name': _escape(peer), 'private': '<strong>' + _escape(_('Private here means hidden from other users')) + '</strong>'} }}</p>
  <p id="blocked-note" class="note blocked-note" role="status"{{!'' if blocked else ' hidden'}}>{{_('You blocked %(name)s. Unblock to write to them.') % {'name': peer} if blocked else ''}}</p>
  <form id="search" class="tool search" role="search" hidden>
    <label for="search-input" class="visually-hidden">{{_('Search this conversation')}}</label>
    <input id="search-input" type="search" maxlength="100" placeholder="{{_('Search this conversation')}}" enterkeyhint="search">
    <button type="submit">{{_('Search')}}</button>
  </form>
  <div id="search-results" class="search-results" hidden>
    <p id="search-note" class="meta" role="status"></p>
    <ol id="results" class="results"></ol>
  </div>
  <p id="start" class="start" hidden>{{_('This is where your conversation with %(name)s begins.') % {'name': peer} }}</p>
  <button id="older" type="button" class="link">{{_('Load older messages')}}</button>
  <ol id="messages" class="messages" aria-live="polite" aria-label="{{_('Messages')}}"></ol>
  <button id="newer" type="button" class="link" hidden>{{_('Load newer messages')}}</button>
  <a id="latest" class="latest" href="/dm/{{peer}}" hidden>{{_('Back to the latest messages')}}</a>
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
    <textarea id="text" rows="1" maxlength="{{text_max}}" placeholder="{{_('Message %(name)s') % {'name': peer} }}" enterkeyhint="send"></textarea>
    <button type="submit">{{_('Send')}}</button>
  </form>
</div>
<script src="/static/attention.js"></script>
<script src="/static/attach.js"></script>
<script src="/static/chat.js"></script>
