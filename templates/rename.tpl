% rebase('base', title=_('Choose a new name'))
<h1>{{_('Choose a new name')}}</h1>
<p class="notice" role="status">{{!_('The name %(name)s was registered on another router first, while the two routers could not reach each other. Your account is safe, but it needs a new name. Your password stays the same.') % {'name': '<strong>' + _escape(old) + '</strong>'} }}</p>
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/rename" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>{{_('New username')}} <input name="username" value="{{name}}" autocomplete="username" autocapitalize="none" required maxlength="{{username_max}}" aria-describedby="name-rule"></label>
  <small id="name-rule">{{username_rule}}</small>
  <button type="submit">{{_('Take this name')}}</button>
</form>
