"""The page templates (Jinja2, autoescaped) and the one stylesheet the report and the comparison share.

Kept apart from the plotting code so a change of layout is a change of this file only. Nothing here
loads anything from outside the page: the Content-Security-Policy forbids it.
"""

from __future__ import annotations

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde1e8; --bg:#f6f7f9; --kept:#4477aa; --drop:#ee6677; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:var(--bg);
       font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif; }
header { background:#1d2330; color:#fff; padding:18px 28px 10px; }
header h1 { margin:0 0 4px; font-size:22px; }
header p { margin:0 0 8px; color:#c9cfdb; }
nav a { color:#9cc3ff; margin-right:14px; text-decoration:none; font-size:13px; }
main { max-width:1180px; margin:0 auto; padding:10px 24px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 18px; margin:16px 0; }
h2 { margin:0 0 10px; font-size:18px; }
h3 { font-size:15px; margin:14px 0 6px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; }
.card { flex:1 1 150px; border:1px solid var(--line); border-radius:6px; padding:8px 12px; }
.card b { display:block; font-size:20px; }
.card span { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; margin:6px 0; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
th { background:#f0f2f5; font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
img.plot { max-width:100%; height:auto; display:block; margin:6px 0; }
.muted { color:var(--muted); }
.warn { background:#fff4e5; border-left:4px solid #f0a030; padding:6px 10px; margin:4px 0; }
.bad { color:#b00020; font-weight:600; }
.good { color:#1b7f3b; font-weight:600; }
details { margin:2px 0; }
summary { cursor:pointer; color:#2a5db0; }
.sample { border-left:3px solid var(--line); margin:4px 0 8px; padding:2px 10px; }
.sample .url { font-family:ui-monospace,Menlo,Consolas,monospace; font-size:12px; word-break:break-all; }
.sample .text { white-space:pre-wrap; color:#333; font-size:12.5px; max-height:9em; overflow:hidden; }
pre { background:#f4f5f7; padding:10px; overflow:auto; font-size:12px; max-height:420px; }
.verdict { display:inline-block; padding:4px 12px; border-radius:12px; color:#fff; font-weight:700; }
.verdict.pass { background:#1b7f3b; } .verdict.fail { background:#b00020; } .verdict.unknown { background:#777; }
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dataset report: {{ r.run.name }}</title>
<style>{{ css|safe }}</style>
</head>
<body>
{% macro heads() %}{% for h in varargs %}
<th{% if h.startswith('#') %} class="n"{% endif %}>{{ h.lstrip('#') }}</th>
{%- endfor %}{% endmacro %}
{% macro n(value) %}<td class="n">{{ value }}</td>{% endmacro %}
{% macro link(s) %}
{%- if s.url.startswith('http://') or s.url.startswith('https://') -%}
<a href="{{ s.url }}" rel="noopener noreferrer nofollow" target="_blank">{{ s.url }}</a>
{%- else %}{{ s.url or s.id }}{% endif -%}
{% endmacro %}
{% macro sample(s) %}
<div class="sample">
  <div class="url">{{ link(s) }}</div>
  {% if s.snippet %}<div class="text">{{ s.snippet }}</div>
  {% else %}<div class="muted">(no text)</div>{% endif %}
</div>
{% endmacro %}
{% macro card(value, label) %}<div class="card"><b>{{ value }}</b><span>{{ label }}</span></div>{% endmacro %}
{% macro plot(name, alt) %}
{%- if fig[name] %}<img class="plot" alt="{{ alt }}" src="{{ fig[name] }}">{% endif -%}
{% endmacro %}
{% set f = r.funnel %}
{% set docs = r.documents %}
<header>
  <h1>Dataset report: {{ r.run.name }}</h1>
  <p>{{ r.run.dump or '' }} &middot; {{ r.run.warc_file_count|num }} WARC files &middot;
     {{ f.docs_in|num }} documents in &rarr; {{ f.docs_out|num }} kept &middot; generated {{ r.generated_at }}</p>
  <nav>
    <a href="#summary">Summary</a><a href="#funnel">Funnel</a><a href="#drops">Drop reasons</a>
    {% if r.counts %}<a href="#counts">Rewrites</a>{% endif %}
    {% if docs %}
    <a href="#languages">Languages</a><a href="#lengths">Lengths</a><a href="#domains">Domains</a>
    {% if docs.signals %}<a href="#signals">Quality signals</a>{% endif %}
    {% endif %}
    {% if ok(r.dedup) %}<a href="#dedup">Duplicates</a>{% endif %}
    {% if ok(r.tokens) %}<a href="#tokens">Tokens</a>{% endif %}
    {% if ok(r.validation) %}<a href="#validation">Validation</a>{% endif %}
    <a href="#samples">Examples</a><a href="#run">Run</a>
  </nav>
</header>
<main>
<section id="summary">
  <h2>Summary</h2>
  <div class="cards">
    {% set kept_share = (f.docs_out / f.docs_in if f.docs_in else none)|pct %}
    {{ card(f.docs_out|num, 'documents kept of %s (%s)' % (f.docs_in|num, kept_share)) }}
    {{ card(f.bytes_out|mb ~ ' MB', 'text kept') }}
    {% if f.tokens_out is none %}{{ card('\u2013', 'tokens (not tokenized yet)') }}
    {% else %}{{ card(f.tokens_out|num, 'tokens (est. from %s, %s bytes/token)' % (
        f.bytes_per_token_source, f.bytes_per_token)) }}{% endif %}
    {% if docs %}
    {{ card(docs.languages_listed_of|num, 'languages') }}
    {{ card(docs.domains.distinct_known|num ~ ('+' if docs.top_lists_approximate else ''), 'domains') }}
    {% endif %}
    {{ card(r.run.task_seconds|num(1) ~ ' s', 'task time (summed over parts)') }}
  </div>
  {% for w in r.warnings %}<div class="warn">{{ w }}</div>{% endfor %}
</section>

<section id="funnel">
  <h2>Funnel</h2>
  {{ plot('funnel', 'funnel: documents, bytes and tokens per stage') }}
  <table>
    <tr>{{ heads('pass', 'stage', '#docs in', '#docs out', '#dropped', '#drop rate', '#MB in', '#MB out',
                 '#tokens in', '#tokens out', '#seconds', '#docs/s') }}</tr>
    {% for s in f.stages %}
    <tr><td>{{ s.pass }}</td><td>{{ s.stage }}</td>
      {{ n(s.docs_in|num) }}{{ n(s.docs_out|num) }}{{ n(s.docs_dropped|num) }}{{ n(s.drop_rate|pct) }}
      {{ n(s.bytes_in|mb ~ (' html' if s.bytes_kind_in == 'html' else '')) }}
      {{ n(s.bytes_out|mb ~ (' html' if s.bytes_kind_out == 'html' else '')) }}
      {{ n(s.tokens_in|num) }}{{ n(s.tokens_out|num) }}{{ n(s.seconds|num(2)) }}{{ n(s.docs_per_second|num) }}</tr>
    {% endfor %}
    <tr class="total"><td colspan="2">total</td>
      {{ n(f.docs_in|num) }}{{ n(f.docs_out|num) }}{{ n((f.docs_in - f.docs_out)|num) }}
      {{ n(((f.docs_in - f.docs_out) / f.docs_in if f.docs_in else none)|pct) }}
      {{ n(f.bytes_in|mb) }}{{ n(f.bytes_out|mb) }}<td></td>{{ n(f.tokens_out|num) }}<td colspan="2"></td></tr>
  </table>
  <p class="muted">Bytes are UTF-8 bytes of the HTML before extraction and of the text after it.
  {% if f.tokens_estimated %}
  Tokens are estimated from text bytes at {{ f.bytes_per_token }} bytes per token,
  measured on the final documents ({{ f.bytes_per_token_source }}).
  {% else %}Token counts appear once the documents are tokenized.{% endif %}</p>
  <h3>What the reader saw and skipped before the first stage</h3>
  <table>
    <tr>{% for k in r.source %}<th class="n">{{ k }}</th>{% endfor %}</tr>
    <tr>{% for v in r.source.values() %}{{ n(v|num) }}{% endfor %}</tr>
  </table>
</section>

<section id="drops">
  <h2>Drop reasons</h2>
  {% if r.drops %}
  {{ plot('drops', 'documents dropped per rule') }}
  <table>
    <tr>{{ heads('stage:rule', '#dropped', '#of stage input', '#of all dropped', '#of run input',
                 'sampled dropped documents') }}</tr>
    {% for d in r.drops %}
    <tr><td>{% if d.pass != 'main' %}{{ d.pass }}/{% endif %}{{ d.key }}</td>
      {{ n(d.count|num) }}{{ n(d.share_of_stage_input|pct) }}
      {{ n(d.share_of_dropped|pct) }}{{ n(d.share_of_input|pct) }}
      <td>{% if d.samples %}<details><summary>{{ d.samples|length }} example{{ 's' if d.samples|length != 1 }}</summary>
        {% for s in d.samples %}{{ sample(s) }}{% endfor %}</details>
        {% else %}<span class="muted">none kept</span>{% endif %}</td></tr>
    {% endfor %}
  </table>
  {% else %}<p class="muted">Nothing was dropped.</p>{% endif %}
</section>

{% if r.counts %}
<section id="counts">
  <h2>Rewrites</h2>
  <p class="muted">What stages changed in the text of the documents they kept, e.g. PII replaced
  (<code>pii:email</code>, <code>pii:ip</code>: email and public IP addresses, as FineWeb).</p>
  <table>
    <tr>{{ heads('stage:counter', '#count', '#documents in', '#per 1,000 documents') }}</tr>
    {% for c in r.counts %}
    <tr><td>{% if c.pass != 'main' %}{{ c.pass }}/{% endif %}{{ c.key }}</td>
      {{ n(c.count|num) }}{{ n(c.docs_in|num) }}{{ n(c.per_1000_docs|num(1)) }}</tr>
    {% endfor %}
  </table>
</section>
{% endif %}

{% if docs %}
<section id="languages">
  <h2>Languages</h2>
  <p class="muted">Of the {{ docs.docs|num }} documents kept after the {{ docs.pass }} pass
  {%- if docs.language_score.kept_languages %}; languages kept: {{ docs.language_score.kept_languages|join(', ') }}
  {%- endif %}.</p>
  {{ plot('languages', 'languages and language score histogram') }}
  <table>
    <tr>{{ heads('language', '#documents', '#share') }}</tr>
    {% for l in docs.languages %}
    <tr><td>{{ l.language }}</td>{{ n(l.docs|num) }}{{ n(l.share|pct) }}</tr>
    {% endfor %}
  </table>
</section>

<section id="lengths">
  <h2>Document length</h2>
  {{ plot('lengths', 'length histograms') }}
  <table>
    <tr>{{ heads('unit', '#total', '#mean', '#p10 \u2264', '#median \u2264', '#p90 \u2264', '#p99 \u2264') }}</tr>
    {% for name, l in docs.lengths.items() if l %}
    <tr><td>{{ name }}</td>{{ n(l.total|num) }}{{ n(l.mean|num) }}{{ n(l.p10|num) }}{{ n(l.p50|num) }}
      {{ n(l.p90|num) }}{{ n(l.p99|num) }}</tr>
    {% endfor %}
  </table>
  <p class="muted">Quantiles are bin upper edges of log-spaced histograms (10 bins per decade).
  Words are runs of non-space characters.</p>
</section>

<section id="domains">
  <h2>Domains and TLDs</h2>
  {{ plot('domains', 'top domains and TLDs') }}
  {% if docs.top_lists_approximate %}
  <p class="warn">Top lists are approximate: each part keeps only its most frequent domains,
  so a domain spread thinly over many parts can be undercounted or missing.</p>
  {% endif %}
  <details><summary>all listed domains ({{ docs.domains.top|length }}) and TLDs ({{ docs.tlds.top|length }})</summary>
  <table>
    <tr>{{ heads('domain', '#documents', '#share') }}</tr>
    {% for d in docs.domains.top %}<tr><td>{{ d.domain }}</td>{{ n(d.docs|num) }}{{ n(d.share|pct) }}</tr>
    {% endfor %}
    <tr><td class="muted">other</td>{{ n(docs.domains.other_docs|num) }}<td></td></tr>
  </table>
  <table>
    <tr>{{ heads('TLD', '#documents', '#share') }}</tr>
    {% for t in docs.tlds.top %}<tr><td>{{ t.tld }}</td>{{ n(t.docs|num) }}{{ n(t.share|pct) }}</tr>
    {% endfor %}
  </table>
  </details>
</section>

{% if docs.signals %}
<section id="signals">
  <h2>Quality signals</h2>
  <p class="muted">Every document a filter saw, kept (blue) and dropped (red), with the filter's thresholds dashed.</p>
  {{ plot('signals', 'quality signal histograms') }}
  <table>
    <tr>{{ heads('signal', 'stage', '#kept', '#dropped', '#missing', 'thresholds') }}</tr>
    {% for name, s in docs.signals.items() %}
    <tr><td>{{ name }}</td><td>{{ s.stage }}</td>{{ n(s.kept_total|num) }}{{ n(s.dropped_total|num) }}
      {{ n(s.missing|num) }}<td>{% for k, v in s.thresholds.items() %}{{ k }} = {{ v }}
      {%- if not loop.last %}, {% endif %}{% endfor %}</td></tr>
    {% endfor %}
  </table>
</section>
{% endif %}
{% endif %}

{% if ok(r.dedup) %}
<section id="dedup">
  <h2>Duplicate clusters</h2>
  <div class="cards">
    {{ card(r.dedup.clusters|num, 'clusters with 2+ documents') }}
    {{ card(r.dedup.documents_in_clusters|num, 'documents in them') }}
    {{ card(r.dedup.documents_removed|num, 'documents removed (one kept per cluster)') }}
  </div>
  {{ plot('dedup', 'duplicate cluster size histogram') }}
  {% if r.dedup.biggest %}
  <h3>Biggest clusters</h3>
  <table>
    <tr>{{ heads('cluster', '#size', 'examples') }}</tr>
    {% for c in r.dedup.biggest[:20] %}
    <tr><td>{{ c.cluster_id }}</td>{{ n(c.size|num) }}
      <td>{% if c.examples %}<details><summary>{{ c.examples|length }} examples</summary>
        {% for s in c.examples %}{{ sample(s) }}{% endfor %}</details>{% endif %}</td></tr>
    {% endfor %}
  </table>
  {% endif %}
</section>
{% endif %}

{% if ok(r.tokens) %}
{% set t = r.tokens %}
<section id="tokens">
  <h2>Token shards</h2>
  <div class="cards">
    {{ card(t.totals.num_tokens|num, 'tokens in %s shards' % (t.totals.shards|num)) }}
    {{ card(t.totals.num_documents|num, 'documents') }}
    {{ card(t.tokenizer or '?', 'tokenizer, vocabulary %s' % (t.vocab_size|num)) }}
    {{ card(t.dtypes|join(', ') or '?', 'dtype' ~ (', %s format' % t.format if t.format else '')) }}
  </div>
  {{ plot('tokens', 'tokens per shard') }}
  <details><summary>shards and checksums</summary>
  <table>
    <tr>{{ heads('shard', 'split', '#tokens', '#documents', 'dtype', 'sha256') }}</tr>
    {% for s in t.shards %}
    <tr><td>{{ s.name }}</td><td>{{ s.split }}</td>{{ n(s.num_tokens|num) }}{{ n(s.num_documents|num) }}
      <td>{{ s.dtype or '' }}</td><td><code>{{ s.sha256 or '' }}</code></td></tr>
    {% endfor %}
  </table>
  </details>
</section>
{% endif %}

{% if ok(r.validation) %}
{% set v = r.validation %}
<section id="validation">
  <h2>GPU validation</h2>
  <p><span class="verdict {{ 'pass' if v.passed else ('fail' if v.passed is sameas false else 'unknown') }}">
    {{- (v.verdict or 'unknown')|upper }}</span>
    {% if v.reason %}<span class="muted">{{ v.reason }}</span>{% endif %}</p>
  <div class="cards">
    {{ card(v.final_val_loss|num(3), 'final val loss (%s)' % v.loss_unit) }}
    {{ card(v.unigram_entropy|num(3), 'unigram entropy of the val shard') }}
    {{ card(v.tokens_per_second|num, 'tokens/s' ~ (' on %s' % v.device if v.device else '')) }}
    {% if v.mfu is not none %}{{ card(v.mfu|pct, 'MFU') }}{% endif %}
  </div>
  {{ plot('validation', 'loss curve vs unigram entropy') }}
</section>
{% endif %}

<section id="samples">
  <h2>Examples of kept documents</h2>
  {% for s in r.kept_samples %}
  <div class="sample"><div class="url">{{ link(s) }}
    <span class="muted">&middot; {{ s.language or '?' }} {{ s.language_score if s.language_score is not none }}
    &middot; {{ s.chars|num }} chars</span></div>
    <div class="text">{{ s.snippet }}</div></div>
  {% else %}<p class="muted">No kept documents.</p>
  {% endfor %}
</section>

<section id="run">
  <h2>Run</h2>
  <table>
    <tr><th>name</th><td>{{ r.run.name }}</td></tr>
    <tr><th>folder</th><td><code>{{ r.run.run_dir }}</code></td></tr>
    <tr><th>dump</th><td>{{ r.run.dump or '\u2013' }}</td></tr>
    <tr><th>recipe</th><td>{{ r.run.recipe or 'none named' }}
      {%- if r.run.extractor %}, extraction: {{ r.run.extractor }}{% endif %}</td></tr>
    <tr><th>engine</th><td>{% for k, v in (r.run.engine or {}).items() %}{{ k }}={{ v }}
      {%- if not loop.last %}, {% endif %}{% else %}\u2013{% endfor %}</td></tr>
    <tr><th>task time</th><td>{{ r.run.task_seconds|num(1) }} s summed over parts</td></tr>
  </table>
  <h3>Passes</h3>
  <table>
    <tr>{{ heads('pass', 'stages', '#parts', '#failed', '#documents out', '#task seconds') }}</tr>
    {% for p in r.run.passes %}
    <tr><td>{{ p.name }}</td><td>{{ p.stages|join(' \u2192 ') }}</td>{{ n(p.parts|num) }}
      <td class="n {{ 'bad' if p.failed_parts }}">{{ p.failed_parts|num }}</td>
      {{ n(p.docs_out|num) }}{{ n(p.task_seconds|num(1)) }}</tr>
    {% endfor %}
  </table>
  {% if r.run.failures %}
  <h3 class="bad">Failed parts</h3>
  <table>
    <tr>{{ heads('pass', 'part', 'inputs', 'error') }}</tr>
    {% for x in r.run.failures %}
    <tr><td>{{ x.pass }}</td><td>{{ x.part }}</td><td>{{ x.inputs|join(', ') }}</td><td>{{ x.error }}</td></tr>
    {% endfor %}
  </table>
  {% endif %}
  {{ plot('seconds', 'seconds per stage') }}
  <h3>Checks</h3>
  <table>
    <tr>{{ heads('check', '#expected', '#actual', '') }}</tr>
    {% for c in r.checks %}
    <tr><td>{{ c.name }}</td>{{ n(c.expected|num) }}{{ n(c.actual|num) }}
      <td class="{{ 'good' if c.ok else 'bad' }}">{{ 'ok' if c.ok else 'MISMATCH' }}</td></tr>
    {% endfor %}
  </table>
  <h3>Inputs</h3>
  <table>
    {% for name in ['dedup', 'tokens', 'validation'] %}
    <tr><th>{{ name }}</th><td>
      {%- if r[name] is none %}<span class="muted">not present</span>
      {%- else %}{% if r[name].get('error') %}<span class="bad">{{ r[name].error }}</span> {% endif -%}
      <code>{{ r[name].path }}</code>{% endif %}</td></tr>
    {% endfor %}
  </table>
  <details><summary>WARC files ({{ r.run.warc_file_count|num }})</summary>
    <pre>{{ r.run.warc_files|join('\\n') }}
{%- if r.run.warc_file_count > r.run.warc_files|length %}
... and {{ (r.run.warc_file_count - r.run.warc_files|length)|num }} more{% endif %}</pre>
  </details>
  <details><summary>package versions ({{ r.run.versions_source }})</summary>
    <table>{% for k, v in r.run.versions.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
  </details>
  <details><summary>configuration</summary>
    <pre>{{ r.run.config|yaml if r.run.config else 'no config.yaml in the run folder' }}</pre></details>
</section>
</main>
</body>
</html>
"""

COMPARE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Run comparison: {{ c.a.name }} vs {{ c.b.name }}</title>
<style>{{ css|safe }}</style>
</head>
<body>
{% macro heads() %}{% for h in varargs %}
<th{% if h.startswith('#') %} class="n"{% endif %}>{{ h.lstrip('#') }}</th>
{%- endfor %}{% endmacro %}
{% macro n(value) %}<td class="n">{{ value }}</td>{% endmacro %}
{% macro delta(d, fmt='num') %}
{%- if fmt == 'pct' %}{{ n(d.a|pct) }}{{ n(d.b|pct) }}{{ n(d.delta|spct) }}
{%- else %}{{ n(d.a|num) }}{{ n(d.b|num) }}{{ n(d.delta|signed) }}{% endif -%}
{% endmacro %}
<header>
  <h1>Run comparison: {{ c.a.name }} (A) vs {{ c.b.name }} (B)</h1>
  <p>A: <code>{{ c.a.run_dir }}</code> &middot; B: <code>{{ c.b.run_dir }}</code></p>
</header>
<main>
<section id="summary">
  <h2>{{ 'No change' if c.identical else 'What changed' }}</h2>
  <p class="{{ 'good' if c.identical else '' }}">{{ c.summary }}</p>
  {% if c.causes %}<p>Stage(s) that changed on the same input: <b>{{ c.causes|join(', ') }}</b>.
  Stages after them see a different input and change as a consequence.</p>{% endif %}
  {% if c.ablation %}
  <h3>Which trains better (ablation)</h3>
  <ul>{% for v in c.ablation.verdicts %}<li><b>{{ v.text }}</b></li>{% endfor %}</ul>
  <p>Same model, token budget and seeds trained on each run, scored on one reference set:
  {% if c.ablation.href %}<a href="{{ c.ablation.href }}">the ablation page</a>
  {%- else %}<code>{{ c.ablation.page }}</code>{% endif %}.</p>
  {% endif %}
  {% if c.config_changes %}
  <h3>Configuration differences</h3>
  <table>
    <tr>{{ heads('setting', 'A', 'B') }}</tr>
    {% for x in c.config_changes %}<tr><td>{{ x.key }}</td><td>{{ x.a }}</td><td>{{ x.b }}</td></tr>{% endfor %}
  </table>
  {% endif %}
  <h3>Output</h3>
  <table>
    <tr>{{ heads('', '#A', '#B', '#change', '#relative') }}</tr>
    {% for key, d in c.output.items() %}
    <tr><td>{{ key }}</td>{{ delta(d) }}{{ n(d.relative|spct) }}</tr>
    {% endfor %}
  </table>
</section>
<section id="stages">
  <h2>Stages</h2>
  {% if fig.stages %}<img class="plot" alt="documents out per stage, A vs B" src="{{ fig.stages }}">{% endif %}
  <table>
    <tr>{{ heads('stage', '#in A', '#in B', '#in \u0394', '#dropped A', '#dropped B', '#dropped \u0394',
                 '#drop rate A', '#drop rate B', '#\u0394', 'verdict') }}</tr>
    {% for s in c.stages %}
    <tr><td>{{ s.key }}</td>{{ delta(s.docs_in) }}{{ delta(s.docs_dropped) }}{{ delta(s.drop_rate, 'pct') }}
      <td class="{{ 'bad' if s.cause else '' }}">
      {%- if s.present != 'both' %}only in {{ s.present|upper }}
      {%- elif s.cause %}changed (same input)
      {%- elif s.changed %}input changed
      {%- else %}same{% endif %}</td></tr>
    {% endfor %}
  </table>
</section>
<section id="rules">
  <h2>Rules</h2>
  {% if fig.rules %}<img class="plot" alt="change in documents dropped per rule" src="{{ fig.rules }}">{% endif %}
  <table>
    <tr>{{ heads('stage:rule', '#A', '#B', '#change', '#of stage input A', '#of stage input B', '#\u0394') }}</tr>
    {% for r in c.rules %}
    <tr><td>{{ r.key }}</td>{{ delta(r.count) }}{{ delta(r.share_of_stage_input, 'pct') }}</tr>
    {% endfor %}
  </table>
</section>
{% if c.quality_classifier %}{% set q = c.quality_classifier %}
<section id="classifier">
  <h2>Quality classifier threshold</h2>
  <p>Threshold {{ q.threshold.a }} (A) / {{ q.threshold.b }} (B): {{ q.moved|signed }} documents below it in B
  ({{ 'each one a document that crossed it: same documents, same model' if q.exact else
      'a net change: the runs scored different documents or used different models' }}).</p>
  <table>
    <tr>{{ heads('', '#A', '#B', '#change') }}</tr>
    <tr><td>scored</td>{{ delta(q.scored) }}</tr>
    <tr><td>below the threshold (dropped)</td>{{ delta(q.below) }}</tr>
  </table>
  {% set m = q.get('documents') or {} %}{% set ab, ba = m.get('kept_a_dropped_b'), m.get('dropped_a_kept_b') %}
  <p>Documents that moved, by id: <b>{{ ab|num if ab is not none else '?' }}</b> kept in A and dropped by B's
  classifier, <b>{{ ba|num if ba is not none else '?' }}</b> dropped by A's classifier and kept in B
  {%- if ab is none or ba is none %} (?: the run that dropped them kept no rejected rows, --keep-rejected)
  {%- endif %}.</p>
</section>
{% endif %}
{% for title, key, rows in [('Languages', 'language', c.languages), ('Domains', 'domain', c.domains)] if rows %}
<section>
  <h2>{{ title }} that changed</h2>
  <table>
    <tr>{{ heads(key, '#A', '#B', '#change') }}</tr>
    {% for x in rows %}<tr><td>{{ x[key] }}</td>{{ delta(x) }}</tr>{% endfor %}
  </table>
</section>
{% endfor %}
</main>
</body>
</html>
"""
