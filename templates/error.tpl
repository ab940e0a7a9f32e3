% rebase('base', title=status)
<h1>{{status}}</h1>
<p class="error">{{message}}</p>
<p><a href="/">{{_('Back to the rooms')}}</a></p>
