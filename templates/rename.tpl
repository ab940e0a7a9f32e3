% from app.accounts import USERNAME_RULE
% rebase('base', title='Choose a new name')
<h1>Choose a new name</h1>
<p class="notice" role="status">The name <strong>{{old}}</strong> was registered on another
router first, while the two routers could not reach each other. Your account is safe,
but it needs a new name. Your password stays the same.</p>
% if error:
<p class="error" role="alert">{{error}}</p>
% end
<form method="post" action="/rename" class="card">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label>New username <input name="username" value="{{name}}" autocomplete="username" autocapitalize="none" required maxlength="{{username_max}}" aria-describedby="name-rule"></label>
  <small id="name-rule">{{USERNAME_RULE}}</small>
  <button type="submit">Take this name</button>
</form>
