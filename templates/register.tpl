% from app.accounts import USERNAME_RULE, PASSWORD_RULE
% rebase('base', title='Register')
<h1>Create an account</h1>
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/register" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>Username <input name="username" value="{{name}}" autocomplete="username" autocapitalize="none" required maxlength="{{username_max}}" aria-describedby="name-rule"></label>
  <small id="name-rule">{{USERNAME_RULE}}</small>
  <label>Password <input name="password" type="password" autocomplete="new-password" required maxlength="{{password_max}}" aria-describedby="pw-rule"></label>
  <small id="pw-rule">{{PASSWORD_RULE}}</small>
  <label>Password again <input name="confirm" type="password" autocomplete="new-password" required maxlength="{{password_max}}"></label>
  <button type="submit">Create account</button>
</form>
<p>Have an account? <a href="/login">Log in</a>.</p>
