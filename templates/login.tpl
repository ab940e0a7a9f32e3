% rebase('base', title='Log in')
<section class="intro" aria-label="About this chat">
  <p>This is the chat of this neighbourhood's Wi-Fi routers, served by <strong>{{node_name}}</strong>.
  It needs no internet: messages go from router to router, and are kept for {{get('kept_for', '24 hours')}}.</p>
%   n = get('online', 0)
  <p class="meta" id="online-now">{{n}} {{'person' if n == 1 else 'people'}} online now.</p>
</section>
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
<p>New here? <a href="/register">Create an account</a>: it works on every router of the neighbourhood.</p>
