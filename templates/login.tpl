% rebase('base', title=_('Log in'))
<section class="intro" aria-label="{{_('About this chat')}}">
  <p>{{!_("This is the chat of this neighbourhood's Wi-Fi routers, served by %(router)s.") % {'router': '<strong>' + _escape(node_name) + '</strong>'} }}
  {{_('It needs no internet: messages go from router to router, and are kept for %(time)s.') % {'time': get('kept_for', '24 hours')} }}</p>
%   n = get('online', 0)
  <p class="meta" id="online-now">{{ngettext('%(num)d person online now.', '%(num)d people online now.', n) % {'num': n} }}</p>
</section>
<h1>{{_('Log in')}}</h1>
% if notice:
<p class="notice" role="status">{{notice}}</p>
% end
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/login" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>{{_('Username')}} <input name="username" value="{{name}}" autocomplete="username" autocapitalize="none" required maxlength="{{username_max}}"></label>
  <label>{{_('Password')}} <input name="password" type="password" autocomplete="current-password" required maxlength="{{password_max}}"></label>
  <button type="submit">{{_('Log in')}}</button>
</form>
<p>{{!_('New here? %(link)s: it works on every router of the neighbourhood.') % {'link': '<a href="/register">' + _escape(_('Create an account')) + '</a>'} }}</p>
