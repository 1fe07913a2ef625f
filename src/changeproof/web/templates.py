"""Dashboard templates (Jinja2, autoescaped). One stylesheet, inline: nothing is fetched."""

from __future__ import annotations

CSS = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1b1f24;--mute:#5b6472;--line:#e3e6ea;--brand:#1f4f8a;
--pass:#1a7f4b;--fail:#c2352b;--ind:#b26a00;--exc:#6b4fbb;--na:#9aa3ad}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
a{color:var(--brand);text-decoration:none}a:hover{text-decoration:underline}
header{background:#13233a;color:#fff;padding:0 24px;display:flex;align-items:center;gap:28px;height:52px}
header .brand{font-weight:700;letter-spacing:.2px;color:#fff}header .brand span{color:#8fb4e6;font-weight:500}
header nav a{color:#c9d6e8;margin-right:18px;font-size:13.5px}header nav a.on{color:#fff;border-bottom:2px solid #8fb4e6;padding-bottom:15px}
header form{margin-left:auto}header button{background:none;border:1px solid #47607f;color:#c9d6e8;border-radius:6px;padding:4px 10px;cursor:pointer}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px}.sub{color:var(--mute);margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card h3{margin:0;font-size:14px;display:flex;justify-content:space-between;align-items:baseline}
.card .rate{font-size:24px;font-weight:650}.card .meta{color:var(--mute);font-size:12px}
.kpis{display:flex;gap:14px;margin-bottom:18px;flex-wrap:wrap}.kpi{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;min-width:150px}
.kpi b{display:block;font-size:22px}.kpi span{color:var(--mute);font-size:12px}
.spark .line{fill:none;stroke:var(--brand);stroke-width:1.8}.spark .area{fill:#1f4f8a14}.spark .grid{stroke:var(--line);stroke-dasharray:3 3}
.spark circle{fill:var(--brand)}
.stack{display:flex;height:8px;border-radius:4px;overflow:hidden;background:var(--line);margin:8px 0 4px}
.seg.o-pass{background:var(--pass)}.seg.o-fail{background:var(--fail)}.seg.o-indeterminate{background:var(--ind)}
.seg.o-exception{background:var(--exc)}.seg.o-not_applicable{background:var(--na)}
.pill{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;border:1px solid}
.pill.pass,.pill.closed,.pill.done,.pill.resolved{color:var(--pass);border-color:#1a7f4b55;background:#1a7f4b0d}
.pill.fail,.pill.overdue,.pill.closed_late,.pill.error,.pill.breached{color:var(--fail);border-color:#c2352b55;background:#c2352b0d}
.pill.indeterminate,.pill.due_soon,.pill.pending{color:var(--ind);border-color:#b26a0055;background:#b26a000d}
.pill.exception,.pill.accepted{color:var(--exc);border-color:#6b4fbb55;background:#6b4fbb0d}
.pill.not_applicable,.pill.not_evaluated,.pill.open{color:#44505e;border-color:#9aa3ad77;background:#9aa3ad14}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden}
th,td{text-align:left;padding:8px 12px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--mute);font-weight:600;background:#fafbfc;text-transform:uppercase;letter-spacing:.3px}
tr:last-child td{border-bottom:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
form.filters{display:flex;gap:8px;margin-bottom:14px;flex-wrap:wrap}
input,select,button.primary{font:inherit;padding:7px 10px;border:1px solid var(--line);border-radius:7px;background:#fff}
button.primary{background:var(--brand);color:#fff;border-color:var(--brand);cursor:pointer}
.reasons{margin:6px 0 0;padding-left:18px}.reasons li{margin:2px 0}
.grid2{display:grid;grid-template-columns:2fr 1fr;gap:16px}dl{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:4px 12px}
dt{color:var(--mute)}dd{margin:0}
details{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 14px;margin:8px 0}
summary{cursor:pointer;font-weight:600}pre{white-space:pre-wrap;word-break:break-word;font-size:12px;margin:8px 0 0}
.signin{max-width:380px;margin:80px auto;background:#fff;border:1px solid var(--line);border-radius:12px;padding:28px}
.signin input{width:100%;margin:8px 0 14px}.err{color:var(--fail)}.empty{color:var(--mute);padding:18px;text-align:center}
.clock{font-variant-numeric:tabular-nums;font-weight:600}
"""

BASE = (
    """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{% block title %}changeproof{% endblock %} · {{ org }}</title><style>"""
    + CSS
    + """</style></head><body>
{% if user %}<header><a class="brand" href="/">changeproof <span>{{ org }}</span></a><nav>
{% for href, label in [("/", "Posture"), ("/changes", "Changes"), ("/emergencies", "Emergencies"),
 ("/patching", "Patching"), ("/exceptions", "Exceptions"), ("/collection", "Collection"), ("/audits", "Audits")] %}
<a href="{{ href }}" class="{{ 'on' if (path == href or (href != '/' and path.startswith(href))) else '' }}">{{ label }}</a>{% endfor %}
</nav><form method="post" action="/signout"><button>Sign out ({{ user.name }})</button></form></header>{% endif %}
<main>{% block body %}{% endblock %}</main></body></html>"""
)

SIGNIN = """{% extends "base.html" %}{% block title %}Sign in{% endblock %}{% block body %}
<form class="signin" method="post" action="/signin"><h1>changeproof</h1>
<p class="sub">{{ org }} — sign in with an API token that may read<br>(<code>changeproof token create --scope read</code>).</p>
{% if error %}<p class="err" role="alert">{{ error }}</p>{% endif %}
<label for="token">Token</label><input id="token" name="token" type="password" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="{{ next }}"><button class="primary" type="submit">Sign in</button></form>{% endblock %}"""

HOME = """{% extends "base.html" %}{% block title %}Posture{% endblock %}{% block body %}
<h1>Control posture</h1>
{% if run %}<p class="sub">Latest check run #{{ run.id }}, finished {{ run.finished_at|when }} UTC · {{ run.results }} results{% if run.period %} · period {{ run.period|replace('T00:00:00+00:00', '')|replace('..', ' → ') }}{% endif %}{% if run.repo %} · {{ run.repo }}{% endif %}</p>
<div class="kpis">{% for k in ["pass", "fail", "indeterminate", "exception"] %}
<div class="kpi"><b>{{ overall.get(k, 0) }}</b><span class="pill {{ k }}">{{ k|label }}</span></div>{% endfor %}
<div class="kpi"><b>{{ emergencies|length }}</b><span>emergency clocks running</span></div></div>
<div class="cards">{% for p in posture %}<div class="card" data-control="{{ p.control }}">
<h3><span>{{ p.control }}</span><span class="rate">{{ p.rate|pct }}</span></h3>
{{ p.counts|bar }}<div class="meta">{{ p.judged }} judged ·
{% for k, v in p.counts|dictsort %}{{ k|label }} {{ v }}{{ ", " if not loop.last }}{% endfor %}</div>
{{ p.trend|spark }}<div class="meta">{% if p.trend %}{{ "daily" if p.bucket == "day" else "weekly" }} pass rate, {{ p.trend[0].week }}{% if p.trend|length > 1 %} → {{ p.trend[-1].week }}{% endif %}{% else %}judged per repository or record, not per change{% endif %}
{% if p.trend and p.counts.get("fail") %} · <a href="/changes?outcome=fail">failing changes</a>{% endif %}</div>
</div>{% endfor %}</div>
{% else %}<p class="empty">No check has run yet: <code>changeproof check</code> fills this page.</p>{% endif %}
<h2>Collection</h2><table><tr><th>Repository</th><th class="num">Changes</th><th>Last good collect</th><th>Complete</th><th>Awaiting re-collect</th></tr>
{% for r in collection %}<tr><td>{{ r.repo }}</td><td class="num">{{ r.changes }}</td><td>{{ r.last_good_collect|when }}</td>
<td>{% if r.complete is none %}—{% elif r.complete %}<span class="pill pass">complete</span>{% else %}<span class="pill fail">gaps</span>{% endif %}</td>
<td class="num">{{ r.awaiting_recollect }}</td></tr>{% else %}<tr><td colspan="5" class="empty">Nothing collected yet.</td></tr>{% endfor %}</table>
{% endblock %}"""

CHANGES = """{% extends "base.html" %}{% block title %}Changes{% endblock %}{% block body %}
<h1>Changes</h1><p class="sub">{{ total }} change(s) on controlled branches, newest first, with the worst outcome of the latest check.</p>
<form class="filters" method="get" action="/changes">
<select name="repo" aria-label="repository"><option value="">all repositories</option>{% for r in repos %}<option {{ 'selected' if r == repo }}>{{ r }}</option>{% endfor %}</select>
<select name="outcome" aria-label="outcome"><option value="">any outcome</option>{% for o in outcomes %}<option value="{{ o }}" {{ 'selected' if o == outcome }}>{{ o|label }}</option>{% endfor %}</select>
<input name="q" value="{{ q }}" placeholder="title or id" aria-label="search"><button class="primary">Filter</button></form>
<table><tr><th>Change</th><th>Title</th><th>Author</th><th>Merged</th><th>Outcome</th></tr>
{% for c in rows %}<tr><td class="mono"><a href="/changes/{{ c.id|q }}">{{ c.id }}</a></td><td>{{ c.title }}</td><td>{{ c.author or "—" }}</td>
<td>{{ c.merged_at|when }}</td><td><span class="pill {{ c.outcome }}">{{ c.outcome|label }}</span></td></tr>
{% else %}<tr><td colspan="5" class="empty">No change matches.</td></tr>{% endfor %}</table>
<p>{% if page_no > 1 %}<a href="?repo={{ repo|q }}&outcome={{ outcome|q }}&q={{ q|q }}&page_no={{ page_no - 1 }}">← newer</a>{% endif %}
{% if page_no * 50 < total %} <a href="?repo={{ repo|q }}&outcome={{ outcome|q }}&q={{ q|q }}&page_no={{ page_no + 1 }}">older →</a>{% endif %}</p>
{% endblock %}"""

CHANGE = """{% extends "base.html" %}{% block title %}{{ c.repo }}{% endblock %}{% block body %}
<p class="sub"><a href="/changes">← changes</a></p>
<h1>{{ c.title or c.merge_sha[:12] }} <span class="pill {{ d.outcome }}">{{ d.outcome|label }}</span></h1>
<p class="sub mono">{{ c.repo }}{% if c.number %}#{{ c.number }}{% endif %} · {{ c.change_type }} into {{ c.branch }} · {{ c.merged_at|when }} UTC · record sha256 {{ d.digest[:16] }}…</p>
<div class="grid2"><section><h2>Controls</h2>
<table><tr><th>Control</th><th>Outcome</th><th>Why</th></tr>
{% for r in d.results %}<tr class="result" data-outcome="{{ r.outcome }}"><td class="mono">{{ r.control }}</td><td><span class="pill {{ r.outcome }}">{{ r.outcome|label }}</span></td>
<td><ul class="reasons">{% for why in r.reasons %}<li>{{ why }}</li>{% endfor %}</ul>{% if r.remediation %}<div class="sub">Fix: {{ r.remediation }}</div>{% endif %}</td></tr>
{% else %}<tr><td colspan="3" class="empty">Not evaluated yet (run <code>changeproof check</code>).</td></tr>{% endfor %}</table></section>
<section><h2>Facts</h2><dl>
<dt>Author</dt><dd>{{ (c.author.login or c.author.name) if c.author else "—" }}</dd>
<dt>Merged by</dt><dd>{{ (c.merged_by.login or c.merged_by.name) if c.merged_by else "—" }}</dd>
<dt>Method</dt><dd>{{ c.merge_method }}</dd><dt>Merge</dt><dd class="mono">{{ c.merge_sha[:12] }}</dd>
<dt>Reviews</dt><dd>{% if c.reviews is none %}not visible to the source{% else %}{{ c.reviews|length }}{% endif %}</dd>
<dt>Checks</dt><dd>{% if c.checks is none %}not visible to the source{% else %}{{ c.checks|length }}{% endif %}</dd>
<dt>Files</dt><dd>{% if c.files is none %}not visible{% else %}{{ c.files|length }}{% endif %}</dd>
<dt>Tickets</dt><dd>{{ c.tickets|join(", ") or "—" }}</dd><dt>Source</dt><dd>{{ c.provenance.source }}, raw sha256 <span class="mono">{{ c.provenance.raw_sha256[:12] }}…</span></dd></dl></section></div>
<h2>Evidence</h2>
{% if c.reviews %}<details open><summary>Reviews ({{ c.reviews|length }})</summary><table><tr><th>Reviewer</th><th>State</th><th>Submitted</th><th>On commit</th></tr>
{% for r in c.reviews %}<tr><td>{{ r.reviewer.login or r.reviewer.name }}</td><td>{{ r.state }}</td><td>{{ r.submitted_at|when }}</td><td class="mono">{{ (r.commit_sha or "")[:12] }}</td></tr>{% endfor %}</table></details>{% endif %}
{% if c.checks %}<details><summary>Checks ({{ c.checks|length }})</summary><table><tr><th>Check</th><th>Conclusion</th><th>App</th><th>Completed</th></tr>
{% for k in c.checks %}<tr><td>{{ k.name }}</td><td>{{ k.conclusion }}</td><td>{{ k.app or k.creator or "—" }}</td><td>{{ k.completed_at|when }}</td></tr>{% endfor %}</table></details>{% endif %}
{% if c.commits %}<details><summary>Commits ({{ c.commits|length }})</summary><table><tr><th>SHA</th><th>Author</th><th>Message</th></tr>
{% for k in c.commits %}<tr><td class="mono">{{ k.sha[:12] }}</td><td>{{ k.author.login or k.author.name }}</td><td>{{ k.message.split("\\n")[0] }}</td></tr>{% endfor %}</table></details>{% endif %}
{% if c.files %}<details><summary>Files ({{ c.files|length }})</summary><pre>{% for f in c.files %}{{ f.status }}  {{ f.path }}
{% endfor %}</pre></details>{% endif %}
{% for r in d.related %}<details class="related"><summary>{{ r.kind }} — <span class="mono">{{ r.record.id or r.record.subject }}</span></summary><pre>{{ r.record|tojson(indent=2) }}</pre></details>{% endfor %}
<details><summary>Change record (JSON)</summary><pre>{{ c|tojson(indent=2) }}</pre></details>
{% endblock %}"""

EMERGENCIES = """{% extends "base.html" %}{% block title %}Emergencies{% endblock %}{% block body %}
<h1>Emergency register</h1><p class="sub">Each emergency must get an independent retroactive review within {{ hours }} hours.</p>
<table><tr><th>Incident</th><th>Change</th><th>Approver</th><th>Declared</th><th>Due</th><th>Clock</th><th>Reviewed</th></tr>
{% for e in rows %}<tr><td>{{ e.incident }}</td><td class="mono"><a href="/changes/{{ e.subject|q }}">{{ e.subject }}</a></td><td>{{ e.approver }}</td>
<td>{{ e.declared_at|when }}</td><td>{{ e.due_at|when }}</td><td><span class="pill {{ e.status }}">{{ e.status|replace("_", " ") }}</span>
{% if e.status in ("open", "due_soon", "overdue") %} <span class="clock">{{ "%+.0f"|format(e.hours_left) }} h</span>{% endif %}</td>
<td>{% if e.reviewed_by %}{{ e.reviewed_by }}, {{ e.reviewed_at|when }}{% else %}—{% endif %}</td></tr>
{% else %}<tr><td colspan="7" class="empty">No emergencies declared.</td></tr>{% endfor %}</table>{% endblock %}"""

PATCHING = """{% extends "base.html" %}{% block title %}Patching{% endblock %}{% block body %}
<h1>Patch board</h1><p class="sub">Every vulnerability finding and its remediation clock.</p>
<table><tr><th>Finding</th><th>Repository</th><th>Tier</th><th>State</th><th>Clock</th></tr>
{% for f in rows %}<tr><td class="mono">{{ f.advisory or f.id }}{% if f.package %} · {{ f.package }}{% endif %}</td><td>{{ f.repo }}</td><td>{{ f.tier }}</td>
<td><span class="pill {{ f.state }}">{{ f.state }}</span></td><td class="clock">{{ f.clock }}</td></tr>
{% else %}<tr><td colspan="5" class="empty">No findings ingested (<code>changeproof ingest scan</code>).</td></tr>{% endfor %}</table>{% endblock %}"""

EXCEPTIONS = """{% extends "base.html" %}{% block title %}Exceptions{% endblock %}{% block body %}
<h1>Exceptions</h1><p class="sub">Approved, expiring deviations from a control.</p>
<table><tr><th>Control</th><th>Subject</th><th>Reason</th><th>Approver</th><th>Expires</th><th>State</th></tr>
{% for x in rows %}<tr><td class="mono">{{ x.control }}</td><td class="mono">{{ x.subject }}</td><td>{{ x.reason }}</td><td>{{ x.approver }}</td>
<td>{{ x.expires_at|when }}</td><td>{% if x.active %}<span class="pill exception">active · {{ x.days_left }} d</span>{% else %}<span class="pill not_applicable">expired</span>{% endif %}</td></tr>
{% else %}<tr><td colspan="6" class="empty">No exceptions recorded.</td></tr>{% endfor %}</table>{% endblock %}"""

COLLECTION = """{% extends "base.html" %}{% block title %}Collection{% endblock %}{% block body %}
<h1>Population completeness and collector health</h1><p class="sub">Last complete collection per repository, known gaps, and webhook events waiting for a re-collect.</p>
<table><tr><th>Repository</th><th class="num">Changes</th><th>Last good collect</th><th class="num">Hours since</th><th>Covered until</th><th>Gaps</th><th>Last webhook</th><th class="num">Awaiting re-collect</th></tr>
{% for r in rows %}<tr><td>{{ r.repo }}</td><td class="num">{{ r.changes }}</td><td>{{ r.last_good_collect|when }}</td><td class="num">{{ r.hours_since_good if r.hours_since_good is not none else "—" }}</td>
<td>{{ r.covered_until|when }}</td><td>{% if r.gaps %}<span class="pill fail">{{ r.gaps|length }}</span> {{ r.gaps|join("; ") }}{% elif r.complete %}<span class="pill pass">none</span>{% else %}—{% endif %}</td>
<td>{{ r.last_webhook|when }}</td><td class="num">{{ r.awaiting_recollect }}</td></tr>
{% else %}<tr><td colspan="8" class="empty">Nothing collected yet.</td></tr>{% endfor %}</table>
<h2>Webhook deliveries</h2><p class="sub">{% for k, v in counts|dictsort %}<span class="pill {{ k }}">{{ k }} {{ v }}</span> {% else %}none received yet{% endfor %}</p>
<table><tr><th>Received</th><th>Source</th><th>Event</th><th>Repository</th><th>Status</th><th>Note</th></tr>
{% for x in deliveries %}<tr><td>{{ x.received_at|when }}</td><td>{{ x.source }}</td><td>{{ x.event }}{% if x.action %} · {{ x.action }}{% endif %}</td><td>{{ x.repo or "—" }}</td>
<td><span class="pill {{ x.status }}">{{ x.status }}</span></td><td>{{ x.detail or "" }}</td></tr>{% endfor %}</table>{% endblock %}"""

AUDITS = """{% extends "base.html" %}{% block title %}Audits{% endblock %}{% block body %}
<h1>Audit packages</h1><p class="sub">Signed packages built by this server (start one with <code>POST /api/v1/audits</code> and an admin token). Verify a download with <code>changeproof verify FILE.zip</code>.</p>
<table><tr><th>Started</th><th>Period</th><th>Status</th><th>Population</th><th>Package</th></tr>
{% for a in rows %}<tr><td>{{ a.started_at|when }}</td><td>{{ a.params.period }}</td><td><span class="pill {{ 'done' if a.status == 'done' else ('error' if a.status == 'failed' else 'pending') }}">{{ a.status }}</span>{% if a.error %} {{ a.error }}{% endif %}</td>
<td>{% if a.summary %}{{ a.summary.population.changes }} change(s){% endif %}</td>
<td>{% if a.status == "done" %}<a class="download" href="/audits/{{ a.id }}/package.zip">Download zip</a>{% endif %}</td></tr>
{% else %}<tr><td colspan="5" class="empty">No audit packages yet.</td></tr>{% endfor %}</table>{% endblock %}"""

MISSING = """{% extends "base.html" %}{% block title %}Not found{% endblock %}{% block body %}
<h1>Not found</h1><p class="sub">There is no {{ what }}.</p>{% endblock %}"""

TEMPLATES = {
    "base.html": BASE,
    "signin.html": SIGNIN,
    "home.html": HOME,
    "changes.html": CHANGES,
    "change.html": CHANGE,
    "emergencies.html": EMERGENCIES,
    "patching.html": PATCHING,
    "exceptions.html": EXCEPTIONS,
    "collection.html": COLLECTION,
    "audits.html": AUDITS,
    "missing.html": MISSING,
}
