% rebase('base', title=_('Register'))
<h1>{{_('Create an account')}}</h1>
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/register" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>{{_('Username')}} <input name="username" value="{{name}}" autocomplete="username" autocapitalize="none" required maxlength="{{username_max}}" aria-describedby="name-rule"></label>
  <small id="name-rule">{{username_rule}}</small>
  <label>{{_('Password')}} <input name="password" type="password" autocomplete="new-password" required maxlength="{{password_max}}" aria-describedby="pw-rule"></label>
  <small id="pw-rule">{{password_rule}}</small>
  <label>{{_('Password again')}} <input name="confirm" type="password" autocomplete="new-password" required maxlength="{{password_max}}"></label>
  <button type="submit">{{_('Create account')}}</button>
</form>
<p>{{!_('Have an account? %(link)s.') % {'link': '<a href="/login">' + _escape(_('Log in')) + '</a>'} }}</p>
