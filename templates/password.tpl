% from app.accounts import PASSWORD_RULE
% rebase('base', title='Change password')
<h1>Change password</h1>
% if notice:
<p class="notice" role="status">{{notice}}</p>
% end
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/password" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>Current password <input name="current" type="password" autocomplete="current-password" required maxlength="{{password_max}}"></label>
  <label>New password <input name="password" type="password" autocomplete="new-password" required maxlength="{{password_max}}" aria-describedby="pw-rule"></label>
  <small id="pw-rule">{{PASSWORD_RULE}}</small>
  <label>New password again <input name="confirm" type="password" autocomplete="new-password" required maxlength="{{password_max}}"></label>
  <button type="submit">Change password</button>
</form>
<p><a href="/">Back to the rooms</a></p>
