% rebase('base', title='Log in')
<h1>Log in</h1>
% if notice:
<p class="notice" role="status">{{notice}}</p>
% end
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/login" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>Username <input name="username" value="{{name}}" autocomplete="username" autocapitalize="none" required maxlength="{{username_max}}"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required maxlength="{{password_max}}"></label>
  <button type="submit">Log in</button>
</form>
<p>New here? <a href="/register">Create an account</a>.</p>
