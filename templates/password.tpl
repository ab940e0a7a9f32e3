% rebase('base', title=_('Change password'))
<h1>{{_('Change password')}}</h1>
% if notice:
<p class="notice" role="status">{{notice}}</p>
% end
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/password" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>{{_('Current password')}} <input name="current" type="password" autocomplete="current-password" required maxlength="{{password_max}}"></label>
  <label>{{_('New password')}} <input name="password" type="password" autocomplete="new-password" required maxlength="{{password_max}}" aria-describedby="pw-rule"></label>
  <small id="pw-rule">{{password_rule}}</small>
  <label>{{_('New password again')}} <input name="confirm" type="password" autocomplete="new-password" required maxlength="{{password_max}}"></label>
  <button type="submit">{{_('Change password')}}</button>
</form>
<p><a href="/">{{_('Back to the rooms')}}</a></p>
