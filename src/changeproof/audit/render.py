"""The package's human side: index.html, one page per sampled change, the PDF, VERIFY.md.

Self-contained pages: inline CSS and inline SVG charts, no script, no external asset, and a
Content-Security-Policy that forbids loading anything, so a package opened years later on an
offline machine looks the same and cannot phone home.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache
from html import escape
from typing import TYPE_CHECKING, Any

import msgspec
from markupsafe import Markup

from changeproof.audit.population import Population, iso, who
from changeproof.evidence import Change
from changeproof.settings import Settings

if TYPE_CHECKING:
    from changeproof.audit.package import AuditRequest, Sampled

LIST_LIMIT = 200
COLORS = {
    "pass": "#2e7d32",
    "exception": "#f9a825",
    "n/a": "#9e9e9e",
    "not_applicable": "#9e9e9e",
    "fail": "#c62828",
    "indeterminate": "#6a1b9a",
}
OUTCOMES = ("pass", "exception", "not_applicable", "fail", "indeterminate")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}h3{font-size:1.05rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;font-size:.86rem}
th,td{border:1px solid #ddd;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82rem;word-break:break-all}
.o{font-weight:600;white-space:nowrap}.o-pass{color:#2e7d32}.o-fail{color:#c62828}.o-indeterminate{color:#6a1b9a}
.o-exception{color:#a66d00}.o-na{color:#666}.muted{color:#666}.box{background:#f8f8f8;border:1px solid #e2e2e2;padding:.6rem .8rem}
pre{white-space:pre-wrap;background:#f8f8f8;border:1px solid #e2e2e2;padding:.6rem;font-size:.82rem}
dl{display:grid;grid-template-columns:14rem 1fr;gap:.2rem .8rem}dt{font-weight:600}dd{margin:0}
nav a{margin-right:1rem}
@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}}
"""

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


@cache
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["o"] = outcome_html
    return env


@cache
def _template(text: str) -> Any:
    """Compile each template once per process (compiling costs more than rendering)."""
    return _env().from_string(text)


def outcome_html(value: str) -> Markup:
    cls = {"n/a": "na", "not_applicable": "na"}.get(value, value)
    label = "n/a" if value == "not_applicable" else value
    return Markup(f'<span class="o o-{escape(cls)}">{escape(label)}</span>')  # noqa: S704 - parts escaped


# --- charts -------------------------------------------------------------------------------


def outcome_chart(counts: dict[str, Counter[str]], title: str) -> Markup:
    """Horizontal stacked bars, one per control, of its outcomes (shares of its results)."""
    ids = sorted(counts)
    if not ids:
        return Markup('<p class="muted">No results.</p>')
    bar_w, label_w, row_h = 560, 110, 24
    h = row_h * len(ids) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{label_w + bar_w + 60}" '
        f'height="{h}" viewBox="0 0 {label_w + bar_w + 60} {h}"><title>{escape(title)}</title>'
    ]
    for i, cid in enumerate(ids):
        c = counts[cid]
        total = sum(c.values()) or 1
        y = 10 + i * row_h
        parts.append(
            f'<text x="0" y="{y + 14}" font-size="12" font-family="sans-serif">{escape(cid)}</text>'
        )
        x = float(label_w)
        for o in OUTCOMES:
            n = c.get(o, 0) + (c.get("n/a", 0) if o == "not_applicable" else 0)
            if not n:
                continue
            w = bar_w * n / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="{COLORS[o]}">'
                f"<title>{escape(cid)} {escape(o)}: {n}</title></rect>"
            )
            x += w
        parts.append(
            f'<text x="{label_w + bar_w + 4}" y="{y + 14}" font-size="11" '
            f'font-family="sans-serif">{sum(c.values())}</text>'
        )
    ly = 10 + len(ids) * row_h + 12
    lx = label_w
    for o in OUTCOMES:
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{COLORS[o]}"/>')
        parts.append(
            f'<text x="{lx + 14}" y="{ly}" font-size="11" font-family="sans-serif">'
            f"{'n/a' if o == 'not_applicable' else o}</text>"
        )
        lx += 110
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text part is escaped above


def monthly_chart(pop: Population) -> Markup:
    """Changes per month, standard and emergency stacked."""
    by: dict[str, Counter[str]] = defaultdict(Counter)
    for r in pop.rows:
        by[r.merged_at.strftime("%Y-%m")][r.population] += 1
    months = sorted(by)
    if not months:
        return Markup('<p class="muted">No changes in the period.</p>')
    top = max(sum(c.values()) for c in by.values())
    w_each = max(14, min(60, 700 // len(months)))
    h, base = 180, 150
    width = max(260, 50 + w_each * len(months))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{h + 20}" '
        f'viewBox="0 0 {width} {h + 20}"><title>Changes per month</title>',
        f'<text x="0" y="12" font-size="11" font-family="sans-serif">{top}</text>',
        f'<line x1="40" y1="{base}" x2="{width}" y2="{base}" stroke="#999"/>',
    ]
    for i, m in enumerate(months):
        x = 45 + i * w_each
        y = float(base)
        for name, color in (("standard", "#1565c0"), ("emergency", "#ef6c00")):
            n = by[m][name]
            if not n:
                continue
            bh = (base - 15) * n / top
            y -= bh
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{w_each - 4}" height="{bh:.1f}" fill="{color}">'
                f"<title>{m} {name}: {n}</title></rect>"
            )
        if len(months) <= 24 or i % 3 == 0:
            parts.append(
                f'<text x="{x}" y="{base + 14}" font-size="9" font-family="sans-serif">{m}</text>'
            )
    parts.append(
        f'<rect x="45" y="{h + 5}" width="10" height="10" fill="#1565c0"/>'
        f'<text x="59" y="{h + 14}" font-size="11" font-family="sans-serif">standard</text>'
        f'<rect x="130" y="{h + 5}" width="10" height="10" fill="#ef6c00"/>'
        f'<text x="144" y="{h + 14}" font-size="11" font-family="sans-serif">emergency</text></svg>'
    )
    return Markup("".join(parts))  # noqa: S704 - every text part is escaped above


# --- context ------------------------------------------------------------------------------


def context(
    req: AuditRequest,
    settings: Settings,
    pop: Population,
    plans: dict[str, dict[str, object]],
    sampled: list[Sampled],
    counts: dict[str, Counter[str]],
    attributes: list[str],
    audit: dict[str, Any],
) -> dict[str, Any]:
    from changeproof import controls

    groups: dict[str, list[Any]] = defaultdict(list)
    for u in sorted(pop.unmatched, key=lambda u: (u.category, u.repo, u.at, u.item)):
        groups[u.category].append(u)
    sample_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for s in sampled:
        for a, (o, _) in s.cells.items():
            sample_counts[a][o] += 1
    defs = {c.id: c.definition for c in controls.ALL_CONTROLS}
    deviations = [s for s in sampled if s.deviates]
    return {
        "css": CSS,
        "csp": CSP,
        "org": settings.organisation.name,
        "req": req,
        "period": f"{iso(req.start)} to {iso(req.end)} (end exclusive; given as {req.period_text} in {req.tz})",
        "audit": audit,
        "pop": pop,
        "plans": plans,
        "sampled": sampled,
        "deviations": deviations,
        "attributes": attributes,
        "defs": defs,
        "counts": counts,
        "sample_counts": sample_counts,
        "groups": {k: (v[:LIST_LIMIT], len(v)) for k, v in sorted(groups.items())},
        "list_limit": LIST_LIMIT,
        "emergency_records": [
            (d, e) for d, e in pop.emergencies if req.start <= e.declared_at < req.end
        ],
        "chart_population": outcome_chart(counts, "Control outcomes over the whole population"),
        "chart_sample": outcome_chart(sample_counts, "Attribute outcomes in the sample"),
        "chart_months": monthly_chart(pop),
        "iso": iso,
        "who": who,
        "settings": settings,
        "policy": audit["policy"],
        "locker": audit["locker_verification"],
    }


INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Change-management audit package — {{ org }}</title><style>{{ css }}</style></head>
<body>
<h1>Change-management audit package — {{ org }}</h1>
<nav><a href="#summary">Summary</a><a href="#method">Method</a><a href="#policy">Policy in force</a><a href="#reconciliation">Reconciliation</a><a href="#worksheet">Worksheet</a><a href="#controls">Controls</a><a href="VERIFY.md">How to verify</a></nav>
<h2 id="summary">Summary</h2>
<dl>
<dt>Period</dt><dd>{{ period }}</dd>
<dt>Scope</dt><dd>{{ pop.repos|join(", ") or "no repositories" }} — controlled branches per the settings</dd>
<dt>Population</dt><dd>{{ pop.counts.changes }} change(s): {{ pop.counts.standard }} standard, {{ pop.counts.emergency }} emergency</dd>
<dt>Population file</dt><dd><a href="population/population.csv">population.csv</a> <code>sha256 {{ audit.population.csv_sha256 }}</code><br><a href="population/population.json">population.json</a> <code>sha256 {{ audit.population.json_sha256 }}</code></dd>
<dt>Sample</dt><dd>{{ sampled|length }} change(s) tested; {{ deviations|length }} with a deviation (fail or indeterminate)</dd>
<dt>Generated</dt><dd>{{ audit.generated_at }} by {{ audit.operator }} with changeproof {{ audit.tool_version }}</dd>
<dt>Settings version</dt><dd><code>{{ audit.settings_version }}</code> (<a href="settings/effective-settings.json">settings in force</a>)</dd>
<dt>Policy in force</dt><dd>{% for v in policy.in_force_during_period %}version {{ v.version }}, approved by {{ v.approver }} on {{ v.approved_at }}{% if not loop.last %}; {% endif %}{% else %}<strong>no approved policy version</strong>{% endfor %} — {% if policy.findings %}<a href="#policy-findings"><strong>{{ policy.findings|length }} policy finding(s)</strong></a>{% else %}no policy finding{% endif %} (<a href="#policy">details</a>)</dd>
<dt>Evidence locker</dt><dd>{{ ("pass" if locker.intact else "fail")|o }} {{ "intact" if locker.intact else "does NOT verify" }}: {{ locker.entries }} chain entries, {{ locker.objects }} objects, {{ locker.checkpoints }} signed checkpoint(s){% if not locker.intact %}, {{ locker.problems|length }} problem(s){% endif %} (<a href="#locker">details</a>)</dd>
<dt>Signing key</dt><dd><code>{{ audit.public_key_fingerprint }}</code> (<a href="public-key.pem">public-key.pem</a>)</dd>
</dl>
<p class="box">{% if not sampled %}No change was sampled.{% elif deviations %}<strong>{{ deviations|length }} of {{ sampled|length }} sampled change(s) show a deviation.</strong> Under zero-deviation attribute sampling any deviation means the planned reliance is not supported without further work (extend testing, or evaluate the deviations).{% else %}No deviation in the {{ sampled|length }} sampled change(s): the sample supports the planned reliance at the stated risk and tolerable deviation rate.{% endif %}</p>
<h3>Changes per month</h3>
{{ chart_months }}
<h3>Control outcomes over the whole population</h3>
{{ chart_population }}
<h3>Attribute outcomes in the sample</h3>
{{ chart_sample }}

<h2 id="method">Method</h2>
{% for name, p in plans.items() %}
<h3>{{ name|capitalize }} population</h3>
<dl>
<dt>Population size</dt><dd>{{ p.population }}</dd>
<dt>Sample size</dt><dd>{{ p.size }}</dd>
<dt>Sizing</dt><dd>{{ p.method }}</dd>
{% if p.risk_of_overreliance is not none %}<dt>Risk of overreliance</dt><dd>{{ "%.4g"|format(p.risk_of_overreliance * 100) }}%</dd>
<dt>Tolerable deviation rate</dt><dd>{{ "%.4g"|format(p.tolerable_deviation_rate * 100) }}%</dd>
<dt>Formula</dt><dd>n = ⌈ln(risk) / ln(1 − rate)⌉ = {{ p.binomial_size }} for a large population; with the finite-population (hypergeometric) correction: smallest n with P(no deviation in n | N, D = ⌈rate·N⌉) ≤ risk = {{ p.size }}</dd>{% endif %}
{% if p.requested_size is not none %}<dt>Requested size</dt><dd>{{ p.requested_size }}</dd>{% endif %}
<dt>Selection</dt><dd>{{ p.selection }}</dd>
{% if p.seed is not none %}<dt>Seed</dt><dd><code>{{ p.seed }}</code></dd>{% endif %}
{% if p.note %}<dt>Note</dt><dd>{{ p.note }}</dd>{% endif %}
</dl>
{% endfor %}
<p>Each change is ranked by the SHA-256 of the seed immediately followed by the change id (UTF-8), and the lowest-ranked changes are taken: the sample does not depend on the order of the population and can be re-performed with <code>sha256sum</code> (see <a href="VERIFY.md">VERIFY.md</a>). Emergency changes form their own population and are sampled on their own. Selected ids: <a href="sample/sample.csv">sample.csv</a>.</p>

<h2 id="policy">Policy in force</h2>
<p>The approved versions of the Change Management Policy that were in force at some moment of the period (recorded with <code>changeproof policy approve</code>). Each text file is the exact Markdown that was approved, read back from the evidence locker; its SHA-256 is the rendered digest the approval records.</p>
<table><tr><th>version</th><th>approved by</th><th>approved at</th><th>effective date</th><th>in force in the period</th><th>rendered SHA-256</th><th>settings version</th><th>approved text</th><th>approval record</th></tr>
{% for v in policy.in_force_during_period %}<tr><td>{{ v.version }}</td><td>{{ v.approver }}</td><td class="mono">{{ v.approved_at }}</td><td class="mono">{{ v.effective_date or "on approval" }}</td><td class="mono">{{ v.in_force_from }} → {{ v.in_force_until }}</td><td class="mono">{{ v.document_sha256 }}</td><td class="mono">{{ v.settings_version[:12] }}…</td><td>{% if v.text_file %}<a href="{{ v.text_file }}">{{ v.text_file }}</a>{% else %}<strong>not available</strong> (see the findings){% endif %}</td><td>{% if v.record_sha256 and v.record_sha256 in exported %}<a class="mono" href="evidence/records/{{ v.record_sha256 }}.json">{{ v.record_sha256[:16] }}…</a>{% endif %}</td></tr>
{% else %}<tr><td colspan="9"><strong>No approved policy version was in force at any time in the period.</strong></td></tr>{% endfor %}
</table>
<p>The settings in use for this audit render policy version {{ policy.settings_in_use.policy_version }} with SHA-256 <code>{{ policy.settings_in_use.document_sha256 }}</code>; {% if policy.settings_in_use.approved %}that exact text has a recorded approval{% else %}<strong>no approval is recorded for that exact text</strong>{% endif %}. {{ policy.approvals_recorded }} approval(s) recorded in all. Findings: <a href="#policy-findings">below</a> and in <a href="reconciliation/policy-findings.csv">policy-findings.csv</a>.</p>

<h2 id="reconciliation">Completeness reconciliation (CM-POP-1)</h2>
<p>Branch history (every first-parent commit on the controlled branches, attributed to a change) against pull requests, production deployments and ticket references. Every unmatched item is listed in <a href="reconciliation/unmatched.csv">unmatched.csv</a>{% if groups %}; the first {{ list_limit }} of each kind are shown here{% endif %}.</p>
{% if not groups %}<p>Every change matched: no direct push, no deployment without a change, no change without a deployment or ticket, no coverage gap.</p>{% endif %}
{% for cat, (items, total) in groups.items() %}
<h3>{{ cat|capitalize }} — {{ total }}</h3>
<table><tr><th>repository</th><th>item</th><th>at</th><th>why</th></tr>
{% for u in items %}<tr><td>{{ u.repo }}</td><td class="mono">{{ u.item }}</td><td class="mono">{{ u.at }}</td><td>{{ u.detail }}</td></tr>{% endfor %}
</table>
{% endfor %}
<h3>Collection coverage</h3>
<table><tr><th>repository</th><th>branch</th><th>sources</th><th>from</th><th>to</th><th>whole period</th><th>detail</th></tr>
{% for c in pop.coverage %}<tr><td>{{ c.repo }}</td><td>{{ c.branch }}</td><td>{{ c.sources|join(", ") }}</td><td class="mono">{{ c.from }}</td><td class="mono">{{ c.to }}</td><td>{{ ("pass" if c.complete else "fail")|o }}</td><td>{{ c.detail }}</td></tr>
{% else %}<tr><td colspan="7">No collection runs recorded.</td></tr>{% endfor %}
</table>
<h3>Configuration history (branch protection)</h3>
<table><tr><th>repository</th><th>branch</th><th>observed</th><th>effective protection</th><th>change</th></tr>
{% for e in pop.config_history %}<tr><td>{{ e.repo }}</td><td>{{ e.branch }}</td><td class="mono">{{ e.at }}</td><td>{{ e.summary }}</td><td>{{ e.changed }}</td></tr>
{% else %}<tr><td colspan="5">No protection snapshots collected for this period.</td></tr>{% endfor %}
</table>
<h3>Bypasses in the period — {{ pop.bypasses|length }}</h3>
<table><tr><th>repository</th><th>branch</th><th>actor</th><th>at</th><th>source</th><th>detail</th></tr>
{% for b in pop.bypasses %}<tr><td>{{ b.repo }}</td><td>{{ b.branch }}</td><td>{{ b.actor }}</td><td class="mono">{{ b.at }}</td><td>{{ b.source }}</td><td>{{ b.detail }}</td></tr>
{% else %}<tr><td colspan="6">None recorded.</td></tr>{% endfor %}
</table>
<h3>Emergency changes — {{ pop.counts.emergency }} change(s), {{ emergency_records|length }} record(s)</h3>
<table><tr><th>record</th><th>change</th><th>incident</th><th>approver</th><th>declared</th><th>reason</th></tr>
{% for d, e in emergency_records %}<tr><td class="mono">{{ e.id }}</td><td class="mono">{{ e.subject }}</td><td>{{ e.incident }}</td><td>{{ e.approver.key }}</td><td class="mono">{{ iso(e.declared_at) }}</td><td>{{ e.reason }}</td></tr>
{% else %}<tr><td colspan="6">No emergency records in the period.</td></tr>{% endfor %}
</table>
<h3 id="policy-findings">Policy approval findings — {{ policy.findings|length }}</h3>
{% if policy.findings %}<table><tr><th>finding</th><th>what happened</th><th>what to do</th></tr>
{% for f in policy.findings %}<tr><td class="mono">{{ f.code }}</td><td>{{ f.message }}</td><td>{{ f.hint }}</td></tr>{% endfor %}
</table>{% else %}<p>None: an approved policy version was in force throughout the period, and the settings the checks used are the ones it approved.</p>{% endif %}
<h3 id="locker">Evidence locker (CM-POP-2)</h3>
<dl><dt>Verified</dt><dd>{{ ("pass" if locker.intact else "fail")|o }} {{ "the whole hash chain and every signed checkpoint verify" if locker.intact else "the locker does NOT verify" }} (when this package was made, with the key that signs it)</dd>
<dt>Chain entries</dt><dd>{{ locker.entries }}</dd><dt>Objects</dt><dd>{{ locker.objects }}</dd><dt>Signed checkpoints</dt><dd>{{ locker.checkpoints }}</dd></dl>
{% if locker.problems %}<table><tr><th>problem</th></tr>{% for p in locker.problems %}<tr><td>{{ p }}</td></tr>{% endfor %}</table>{% endif %}
{% if pop.population_results %}<h3>Population-level control results</h3>
<table><tr><th>control</th><th>subject</th><th>outcome</th><th>reasons</th></tr>
{% for r in pop.population_results %}<tr><td>{{ r.control }}</td><td class="mono">{{ r.subject }}</td><td>{{ r.outcome.value|o }}</td><td>{{ r.reasons|join("; ") }}</td></tr>{% endfor %}
</table>{% endif %}

<h2 id="worksheet">Worksheet</h2>
<p>One row per sampled change, one column per attribute (control). <a href="worksheet.csv">worksheet.csv</a> has the reasons for every cell.</p>
<table><tr><th>change</th><th>population</th><th>merged</th>{% for a in attributes %}<th title="{{ defs[a].title if a in defs else a }}">{{ a }}</th>{% endfor %}<th>deviation</th></tr>
{% for s in sampled %}<tr><td class="mono"><a href="changes/{{ s.slug }}.html">{{ s.row.id }}</a></td><td>{{ s.row.population }}</td><td class="mono">{{ iso(s.row.merged_at) }}</td>
{% for a in attributes %}<td title="{{ s.cells[a][1] }}">{{ s.cells[a][0]|o }}</td>{% endfor %}<td>{{ "yes" if s.deviates else "no" }}</td></tr>
{% else %}<tr><td colspan="{{ attributes|length + 4 }}">No change sampled.</td></tr>{% endfor %}
</table>

<h2 id="controls">Controls in force</h2>
<p><a href="controls.csv">controls.csv</a>; definitions in <a href="controls/definitions/">controls/definitions/</a>.</p>
<table><tr><th>control</th><th>title</th><th>pass criterion</th><th>population (pass / fail / exception / n/a / indeterminate)</th></tr>
{% for cid, d in defs.items() %}<tr><td>{{ cid }}</td><td>{{ d.title }}</td><td>{{ d.pass_criterion }}</td><td class="mono">{% set c = counts.get(cid, {}) %}{{ c.get("pass", 0) }} / {{ c.get("fail", 0) }} / {{ c.get("exception", 0) }} / {{ c.get("not_applicable", 0) }} / {{ c.get("indeterminate", 0) }}</td></tr>{% endfor %}
</table>
<p class="muted">Integrity: every file is listed with its SHA-256 in <a href="manifest.json">manifest.json</a> and <a href="SHA256SUMS">SHA256SUMS</a>, both signed with the ed25519 key above. OSCAL: <a href="oscal/assessment-plan.json">assessment plan</a>, <a href="oscal/assessment-results.json">assessment results</a>.</p>
</body></html>
"""


CHANGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ s.row.id }} — evidence</title><style>{{ css }}</style></head>
<body>
<nav><a href="../index.html">← Package</a><a href="../index.html#worksheet">Worksheet</a></nav>
<h1>{{ s.row.id }}</h1>
<p>{{ c.title }}</p>
<dl>
<dt>Population</dt><dd>{{ s.row.population }}{% if s.rank %} (rank <code>{{ s.rank }}</code>){% endif %}</dd>
<dt>Repository / branch</dt><dd>{{ c.repo }} / {{ c.branch }}</dd>
<dt>Kind</dt><dd>{{ c.change_type }} ({{ c.platform }}){% if c.number is not none %}, #{{ c.number }}{% endif %}</dd>
<dt>Merged</dt><dd class="mono">{{ iso(c.merged_at) }} by {{ who(c.merged_by) or "unknown" }}</dd>
<dt>Author</dt><dd>{{ who(c.author) or "unknown" }}</dd>
<dt>Merge commit</dt><dd class="mono">{{ c.merge_sha }}</dd>
<dt>Head commit</dt><dd class="mono">{{ c.head_sha or "unknown" }}</dd>
<dt>Base commit</dt><dd class="mono">{{ c.base_sha or "unknown" }}</dd>
<dt>Landed commits</dt><dd class="mono">{{ c.landed_shas|join(", ") }}</dd>
{% if c.provenance.url %}<dt>Link</dt><dd class="mono">{{ c.provenance.url }}</dd>{% endif %}
<dt>Record</dt><dd><a class="mono" href="../evidence/records/{{ s.row.record_sha256 }}.json">{{ s.row.record_sha256 }}</a> (raw: {% if c.provenance.raw_sha256 in raw_exported %}<a class="mono" href="../evidence/raw/{{ c.provenance.raw_sha256 }}">{{ c.provenance.raw_sha256 }}</a>{% else %}<span class="mono">{{ c.provenance.raw_sha256 }}</span> not in the locker{% endif %}; collected {{ iso(c.provenance.collected_at) }} from {{ c.provenance.source }})</dd>
</dl>

<h2>Attributes</h2>
<table><tr><th>attribute</th><th>title</th><th>outcome</th><th>reason</th></tr>
{% for a in attributes %}<tr><td>{{ a }}</td><td>{{ defs[a].title if a in defs else "" }}</td><td>{{ s.cells[a][0]|o }}</td><td>{{ s.cells[a][1] }}</td></tr>{% endfor %}
</table>

<h2>Approvals</h2>
{% if c.reviews is none %}<p class="box">No review evidence was collected for this change (git history alone cannot show who approved it).</p>
{% else %}<table><tr><th>reviewer</th><th>state</th><th>submitted</th><th>approved commit</th><th>is the merged head</th><th>dismissed</th><th>source</th></tr>
{% for r in c.reviews %}<tr><td>{{ who(r.reviewer) }}</td><td>{{ r.state }}</td><td class="mono">{{ iso(r.submitted_at) }}</td><td class="mono">{{ r.commit_sha or "not recorded" }}</td><td>{{ "yes" if r.commit_sha and r.commit_sha == c.head_sha else ("same patch" if r.commit_patch_id and r.commit_patch_id == c.head_patch_id else "no") }}</td><td>{% if r.dismissed_at %}{{ iso(r.dismissed_at) }} by {{ who(r.dismissed_by) }}{% endif %}</td><td>{{ r.source }}</td></tr>
{% else %}<tr><td colspan="7">No reviews.</td></tr>{% endfor %}</table>{% endif %}

<h2>Checks</h2>
{% if c.checks is none %}<p class="box">No check evidence was collected for this change.</p>
{% else %}<table><tr><th>check</th><th>conclusion</th><th>commit</th><th>started</th><th>completed</th><th>kind / app</th><th>log sha256</th></tr>
{% for k in c.checks %}<tr><td>{{ k.name }}</td><td>{{ k.conclusion }}</td><td class="mono">{{ k.commit_sha }}</td><td class="mono">{{ iso(k.started_at) }}</td><td class="mono">{{ iso(k.completed_at) }}</td><td>{{ k.kind }}{% if k.app %} / {{ k.app }}{% endif %}</td><td class="mono">{{ k.log_sha256 or "" }}</td></tr>
{% else %}<tr><td colspan="7">No checks.</td></tr>{% endfor %}</table>{% endif %}

<h2>Deployments (pre-production → production)</h2>
<table><tr><th>environment</th><th>commit</th><th>status</th><th>started</th><th>finished</th><th>artifact</th><th>by</th><th>record</th></tr>
{% for env, d, dig in s.shipped_by %}<tr><td>{{ env }}</td><td class="mono">{{ d.commit_sha }}</td><td>{{ d.status }}</td><td class="mono">{{ iso(d.started_at) }}</td><td class="mono">{{ iso(d.finished_at) }}</td><td class="mono">{{ d.artifact or "" }}</td><td>{{ who(d.actor) }}</td><td>{% if dig in exported %}<a class="mono" href="../evidence/records/{{ dig }}.json">{{ dig[:16] }}…</a>{% else %}{{ dig[:16] }}…{% endif %}</td></tr>
{% else %}<tr><td colspan="8">No deployment shipping this change was recorded.</td></tr>{% endfor %}</table>
{% if s.shipped_by %}<p>{{ artifact_note(s) }}</p>{% endif %}
{% for title, items in sections %}
<h2>{{ title }}</h2>
{% if not items %}<p class="muted">None recorded.</p>{% endif %}
{% for rel, fields in items %}<h3>{{ rel.kind }} <span class="mono">{{ fields.get("id", "") }}</span></h3>
<table>{% for k, v in fields.items() %}<tr><th>{{ k }}</th><td class="mono">{{ v }}</td></tr>{% endfor %}
<tr><th>record</th><td><a class="mono" href="../evidence/records/{{ rel.digest }}.json">{{ rel.digest }}</a> (raw {% if rel.raw_sha256 in raw_exported %}<a class="mono" href="../evidence/raw/{{ rel.raw_sha256 }}">{{ rel.raw_sha256[:16] }}…</a>{% else %}{{ rel.raw_sha256[:16] }}… not in the locker{% endif %})</td></tr></table>
{% endfor %}{% endfor %}

<h2>Documentation</h2>
<dl><dt>Tickets</dt><dd>{{ c.tickets|join(", ") or "none" }}</dd><dt>Labels</dt><dd>{{ c.labels|join(", ") or "none" }}</dd>
<dt>Fields the policy requires</dt><dd>{{ settings.documentation.required_fields|join(", ") }}</dd></dl>
<h3>Description</h3>
<pre>{{ c.body or "(empty)" }}</pre>

<h2>Commits</h2>
<table><tr><th>sha</th><th>author</th><th>committer</th><th>signature</th><th>message</th></tr>
{% for k in c.commits %}<tr><td class="mono">{{ k.sha }}</td><td>{{ who(k.author) }}</td><td>{{ who(k.committer) }}</td><td>{{ k.signature }}</td><td>{{ k.message.splitlines()[0] if k.message else "" }}</td></tr>
{% else %}<tr><td colspan="5">No commit details recorded.</td></tr>{% endfor %}</table>

<h2>Control results</h2>
<table><tr><th>control</th><th>subject</th><th>outcome</th><th>reasons</th><th>evidence read (sha256)</th></tr>
{% for r in results %}<tr><td>{{ r.control }}</td><td class="mono">{{ r.subject }}</td><td>{{ r.outcome.value|o }}</td><td>{{ r.reasons|join("; ") }}{% if r.remediation %}<br><span class="muted">Fix: {{ r.remediation }}</span>{% endif %}</td><td class="mono">{% for e in r.evidence %}{% if e in exported %}<a href="../evidence/records/{{ e }}.json">{{ e[:16] }}…</a>{% else %}{{ e[:16] }}…{% endif %} {% endfor %}</td></tr>
{% else %}<tr><td colspan="5">No results.</td></tr>{% endfor %}</table>
</body></html>
"""


def _fields(rel: Any) -> dict[str, str]:
    data = msgspec.json.decode(rel.body) if rel.record is None else msgspec.to_builtins(rel.record)
    out: dict[str, str] = {}
    if not isinstance(data, dict):
        return {"value": str(data)}
    for k, v in data.items():
        if k == "provenance" and isinstance(v, dict):
            out["occurred_at"] = str(v.get("occurred_at", ""))
            out["collected_at"] = str(v.get("collected_at", ""))
            out["source"] = str(v.get("source", ""))
            if v.get("url"):
                out["url"] = str(v["url"])
            continue
        out[k] = _cell(v)
    return out


def _cell(v: Any) -> str:
    """A record field as one readable line: actors by login, nested rules as 'k: v' lists."""
    if v is None:
        return ""
    if isinstance(v, dict):
        if any(k in v for k in ("login", "email")) and "type" in v:
            return str(v.get("login") or v.get("email") or v.get("name"))
        return "; ".join(f"{k}: {_cell(x)}" for k, x in v.items() if x not in (None, "", [], {}))
    if isinstance(v, list):
        if v and all(isinstance(x, dict) for x in v):
            return " | ".join(_cell(x) for x in v)
        return ", ".join(_cell(x) for x in v)
    return str(v)


def artifact_note(s: Sampled, settings: Settings) -> str:
    """Whether production ran the artifact (or commit) that pre-production ran first."""
    envs = settings.environments
    pre = [d for env, d, _ in s.shipped_by if env in envs.pre_production]
    prod = [d for env, d, _ in s.shipped_by if env in envs.production]
    if not prod:
        return "No production deployment shipping this change was recorded."
    if not pre:
        return "No pre-production deployment shipping this change was recorded before production."
    p, q = pre[0], prod[0]
    order = "before" if p.started_at <= q.started_at else "AFTER"
    if p.artifact and q.artifact:
        same = "the same artifact" if p.artifact == q.artifact else "a DIFFERENT artifact"
    else:
        same = "the same commit" if p.commit_sha == q.commit_sha else "a DIFFERENT commit"
    return (
        f"{p.environment} ran {same} as {q.environment}, and started {order} it "
        f"({iso(p.started_at)} → {iso(q.started_at)})."
    )


def change_html(ctx: dict[str, Any], s: Sampled) -> bytes:
    from changeproof.audit import package

    auth, emerg, other = [], [], []
    for rel in s.related:
        item = (rel, _fields(rel))
        if rel.kind in ("emergency", "retro_review"):
            emerg.append(item)
        elif any(h in rel.kind for h in package.AUTH_HINTS):
            auth.append(item)
        elif rel.kind != "deployment":
            other.append(item)
    sections = [
        ("Authorisation record", auth),
        ("Emergency record and retroactive review", emerg),
    ]
    if other:
        sections.append(("Other evidence about this change", other))
    change: Change = s.change
    html: str = _template(CHANGE).render(
        **ctx,
        s=s,
        c=change,
        sections=sections,
        results=sorted(s.results, key=lambda r: (r.control, r.subject)),
        artifact_note=lambda x: artifact_note(x, ctx["settings"]),
    )
    return html.encode("utf-8")


def index_html(ctx: dict[str, Any]) -> bytes:
    html: str = _template(INDEX).render(**ctx)
    return html.encode("utf-8")


PRINT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Audit summary — {{ org }}</title>
<style>{{ css }} @page{size:A4 landscape;margin:14mm} body{font-size:10pt;max-width:none;margin:0} table{font-size:7.5pt;table-layout:fixed;width:100%} td,th{padding:2px 3px;overflow-wrap:anywhere} dl{display:block} dt{float:left;width:9rem;clear:left} dd{margin-left:10rem}</style></head><body>
<h1>Change-management audit — {{ org }}</h1>
<dl><dt>Period</dt><dd>{{ period }}</dd><dt>Scope</dt><dd>{{ pop.repos|join(", ") }}</dd>
<dt>Population</dt><dd>{{ pop.counts.changes }} change(s) ({{ pop.counts.standard }} standard, {{ pop.counts.emergency }} emergency); population.csv sha256 {{ audit.population.csv_sha256 }}</dd>
<dt>Sample</dt><dd>{{ sampled|length }} tested, {{ deviations|length }} with a deviation</dd>
<dt>Generated</dt><dd>{{ audit.generated_at }} by {{ audit.operator }}, changeproof {{ audit.tool_version }}</dd>
<dt>Signing key</dt><dd>{{ audit.public_key_fingerprint }}</dd>
<dt>Evidence locker</dt><dd>{{ "intact" if locker.intact else "DOES NOT VERIFY" }}: {{ locker.entries }} entries, {{ locker.checkpoints }} signed checkpoint(s){% if not locker.intact %}, {{ locker.problems|length }} problem(s){% endif %}</dd></dl>
<h2>Policy in force</h2>
<table><tr><th>version</th><th>approved by</th><th>approved at</th><th>effective date</th><th>in force in the period</th><th>rendered SHA-256</th></tr>
{% for v in policy.in_force_during_period %}<tr><td>{{ v.version }}</td><td>{{ v.approver }}</td><td>{{ v.approved_at }}</td><td>{{ v.effective_date or "on approval" }}</td><td>{{ v.in_force_from }} → {{ v.in_force_until }}</td><td>{{ v.document_sha256 }}</td></tr>
{% else %}<tr><td colspan="6">No approved policy version was in force at any time in the period.</td></tr>{% endfor %}</table>
{% if policy.findings %}<table><tr><th>policy finding</th><th>what happened</th></tr>{% for f in policy.findings %}<tr><td>{{ f.code }}</td><td>{{ f.message }}</td></tr>{% endfor %}</table>{% else %}<p>No policy finding.</p>{% endif %}
<h2>Method</h2>
<table><tr><th>population</th><th>N</th><th>n</th><th>sizing</th><th>risk</th><th>tolerable rate</th><th>selection</th><th>seed</th></tr>
{% for name, p in plans.items() %}<tr><td>{{ name }}</td><td>{{ p.population }}</td><td>{{ p.size }}</td><td>{{ p.method }}</td><td>{{ p.risk_of_overreliance if p.risk_of_overreliance is not none else "" }}</td><td>{{ p.tolerable_deviation_rate if p.tolerable_deviation_rate is not none else "" }}</td><td>{{ p.selection }}</td><td>{{ p.seed or "" }}</td></tr>{% endfor %}</table>
<h2>Reconciliation</h2>
<table><tr><th>item</th><th>count</th></tr>{% for k, v in pop.counts.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{{ chart_population }}
<h2>Worksheet</h2>
<table><tr><th>change</th><th>population</th>{% for a in attributes %}<th>{{ a }}</th>{% endfor %}<th>deviation</th></tr>
{% for s in sampled %}<tr><td>{{ s.row.id }}</td><td>{{ s.row.population }}</td>{% for a in attributes %}<td>{{ s.cells[a][0]|o }}</td>{% endfor %}<td>{{ "yes" if s.deviates else "no" }}</td></tr>{% endfor %}</table>
<p>{{ deviations|length }} sampled change(s) deviate. The reason for every cell is in worksheet.csv and on each change's evidence page in the package.</p>
</body></html>
"""


def pdf(ctx: dict[str, Any]) -> bytes:
    """The summary and worksheet as PDF via WeasyPrint (no LaTeX); imported only here."""
    from changeproof.errors import ChangeproofError

    try:
        import weasyprint  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:
        raise ChangeproofError(
            f"cannot make the PDF summary: WeasyPrint is not usable here ({exc})",
            expected="WeasyPrint and its Pango libraries (installed with changeproof)",
            hint="install Pango (e.g. apt-get install libpango-1.0-0 libpangoft2-1.0-0) or run with --no-pdf",
        ) from None
    html = _template(PRINT).render(**ctx)
    data: bytes = weasyprint.HTML(string=html).write_pdf()
    return data


VERIFY = """# How to verify this audit package

This folder is a change-management audit package made by changeproof {{ audit.tool_version }}
on {{ audit.generated_at }} by {{ audit.operator }}. Every file in it is listed with its SHA-256
in `SHA256SUMS` and `manifest.json`; both lists are signed with the organisation's ed25519
evidence key (`public-key.pem`). Checking needs only standard tools (`openssl` 3.x and
`sha256sum` from coreutils) and no network. Run the commands from inside this folder.

## 1. Is the key the organisation's?

The signature only means something if the key is the one the organisation gave you out of
band (for example with `changeproof key export`). Its fingerprint (SHA-256 of the raw 32-byte
ed25519 public key) is:

    {{ audit.public_key_fingerprint }}

Compute it yourself:

    openssl pkey -pubin -in public-key.pem -outform DER | tail -c 32 | sha256sum

## 2. Are the signatures good?

    openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig
    openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in manifest.json -sigfile manifest.json.sig

Each must print `Signature Verified Successfully`.

## 3. Is every file unchanged?

    sha256sum --strict -c --quiet SHA256SUMS && echo "all files match"

Any changed or missing file is named (`FAILED` or `No such file`).

## 4. Was any file added?

    find . -type f ! -name manifest.json ! -name manifest.json.sig ! -name SHA256SUMS ! -name SHA256SUMS.sig | sed 's|^\\./||' | LC_ALL=C sort > /tmp/present.txt
    cut -c67- SHA256SUMS | LC_ALL=C sort > /tmp/listed.txt
    diff /tmp/listed.txt /tmp/present.txt && echo "no file added or missing"

## 5. The population

`population/population.csv` is the canonical population (one row per change, UTF-8, LF line
ends); `audit.json` records its SHA-256 ({{ audit.population.csv_sha256 }}), the period
({{ period }}), the filters, the tool version, the time and the operator.

    sha256sum population/population.csv

## 6. Re-perform the sample selection
{% for name, p in plans.items() %}{% if p.seed is not none %}
{{ name|capitalize }} population ({{ p.population }} changes, sample of {{ p.size }}): rank each change by
SHA-256(seed ‖ change id) and take the lowest {{ p.size }}:

    SEED='{{ p.seed }}'
    awk -F, 'NR>1 && $2=="{{ name }}" {print $1}' population/population.csv | while IFS= read -r id; do printf '%s %s\\n' "$(printf '%s' "$SEED$id" | sha256sum | cut -c1-64)" "$id"; done | LC_ALL=C sort | head -n {{ p.size }}

The result must equal the {{ name }} rows of `sample/sample.csv` (rank, id), in the same order.
{% else %}
{{ name|capitalize }} population: the sample is {{ p.selection }}: {{ p.size }} change(s), listed in `sample/sample.csv`. There is no selection to re-perform.
{% endif %}{% endfor %}
## 7. The policy in force

{% if policy.in_force_during_period %}`audit.json` (`policy.in_force_during_period`) names the approved Change Management Policy
version(s) in force during the period, each with its approver, approval time and the SHA-256 of
the approved text. The texts are in `policy/`; each must hash to the recorded digest:
{% for v in policy.in_force_during_period %}
- version {{ v.version }}, approved by {{ v.approver }} on {{ v.approved_at }}: {% if v.text_file %}`{{ v.text_file }}`, SHA-256 {{ v.document_sha256 }}{% else %}the approved text is NOT in the package (see the findings){% endif %}{% endfor %}

    sha256sum policy/*.md
{% else %}No approved policy version was in force at any time in the period.
{% endif %}
Policy findings ({{ policy.findings|length }}) are listed in `reconciliation/policy-findings.csv`
and in `audit.json` (`policy.findings`).

## 8. With changeproof (optional)

    changeproof verify .                              # or the .zip
    changeproof verify . --public-key org-key.pem     # pin the organisation's key

Exit code 0 means intact; 1 names every changed, missing or added file and any bad signature.
"""


def verify_md(ctx: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)  # noqa: S701 - Markdown, not HTML
    return env.from_string(VERIFY).render(**ctx)
