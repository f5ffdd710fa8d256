"""The web console: server-rendered pages over the same accounts and services as the API.

Pages are Jinja templates rendered here (reads go through the same queue and fleet modules as
the API's routes); every action a page offers is a call from the browser to the public API
itself (cancel, delete, submit, upload, scale), authenticated by the console's session cookie
and its CSRF token (:mod:`api.auth.sessions`). htmx (from npm, served from
``static/vendor``) refreshes the live parts of a page; ``static/console.js`` sends the actions.
No inline script anywhere: every page carries a strict Content-Security-Policy.
"""
