// The trace explorer's script (thoughtscope `plot::explorer`): vanilla JS, no network. `init(root)`
// reads the JSON in `root .ts-data` and wires one explorer, everything scoped to `root`, so
// several explorers can share a page (notebooks). Numbers shown carry their JSON value in
// `data-v` (the browser test compares them with the embedded data).
function init(root) {
  'use strict';
  var started = performance.now();
  var D = JSON.parse(root.querySelector('.ts-data').textContent);
  var N = D.sentences.length;
  var TOP = 5;
  var byKey = {};
  D.matrices.forEach(function (m) { byKey[m.key] = m; });
  var state = { metric: null, matrix: null, selected: null, cell: null, marked: [] };
  function q(selector) { return root.querySelector(selector); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function finite(v) { return typeof v === 'number' && isFinite(v); }
  function fmt(v) {
    if (!finite(v)) return '\u2013';
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(3);
    return String(+v.toPrecision(4));
  }
  function at(m, row, col) { return m.lower[row * (row + 1) / 2 + col]; }
  function missing(part) {
    for (var k = 0; k < D.missing.length; k++) if (D.missing[k].part === part) return D.missing[k];
    return null;
  }
  // The full line (why, and the command that makes it) goes at the top; panels repeat it short.
  function missingLine(item) {
    var li = el('li', 'ts-miss');
    li.dataset.part = item.part;
    li.appendChild(el('b', null, 'missing: ' + item.part));
    li.appendChild(document.createTextNode(' \u2014 ' + item.why + '. Run '));
    li.appendChild(el('code', null, item.command));
    li.appendChild(document.createTextNode(' to make it.'));
    return li;
  }
  function missingNote(item) {
    var p = el('p', 'ts-miss');
    p.dataset.part = item.part;
    p.appendChild(el('b', null, 'missing: ' + item.part));
    p.appendChild(document.createTextNode(' \u2014 run '));
    p.appendChild(el('code', null, item.command.split(' ').slice(0, 2).join(' ') + ' \u2026'));
    p.appendChild(document.createTextNode(' (the whole command is at the top).'));
    return p;
  }

  // Header.
  q('.ts-title').textContent = D.title;
  var sub = N + ' sentences \u00b7 ' + D.mode + ' mode' + (D.model ? ' \u00b7 ' + D.model : '') +
    (D.grid ? ' (' + D.grid[0] + ' layers \u00d7 ' + D.grid[1] + ' heads)' : '') + (D.source ? ' \u00b7 ' + D.source : '');
  q('.ts-sub').textContent = sub;
  D.missing.forEach(function (m) { q('.ts-missing').appendChild(missingLine(m)); });
  if (D.notes.length) {
    var details = el('details');
    details.appendChild(el('summary', null, 'How the data were read (' + D.notes.length + ' note' + (D.notes.length === 1 ? '' : 's') + ')'));
    var notes = el('ul');
    D.notes.forEach(function (n) { notes.appendChild(el('li', null, n)); });
    details.appendChild(notes);
    q('.ts-notes').appendChild(details);
  }

  // Colour scales. Sequential: white to orange-red; diverging: blue, white, red; heatmap: viridis.
  function mix(a, b, t) { return [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * t); }); }
  function rgb(c) { return 'rgb(' + c[0] + ',' + c[1] + ',' + c[2] + ')'; }
  var WHITE = [255, 255, 255], HOT = [222, 74, 20], COLD = [40, 100, 180];
  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  var LUT = [];
  for (var s = 0; s < 256; s++) {
    var x = s / 255 * (VIRIDIS.length - 1), k0 = Math.min(Math.floor(x), VIRIDIS.length - 2);
    LUT.push(mix(VIRIDIS[k0], VIRIDIS[k0 + 1], x - k0));
  }
  var PALETTE = [[166, 206, 227], [178, 223, 138], [251, 154, 153], [253, 191, 111], [202, 178, 214], [255, 255, 153],
    [141, 211, 199], [190, 186, 218], [252, 205, 229], [217, 217, 217], [204, 235, 197], [255, 237, 111]];

  // Colour limits: the minimum and the 95th percentile (one attention sink would otherwise make
  // every other sentence white); values beyond are saturated, and the legend says so.
  function quantile(sorted, p) { return sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))]; }
  function scaleOf(values) {
    var kept = values.filter(finite).sort(function (a, b) { return a - b; });
    if (!kept.length) return null;
    var lo = kept[0], max = kept[kept.length - 1];
    if (lo < 0 && max > 0) {
      var magnitudes = kept.map(Math.abs).sort(function (a, b) { return a - b; });
      var a = quantile(magnitudes, 0.95) || magnitudes[magnitudes.length - 1];
      return { diverging: true, lo: -a, hi: a, clipped: a < magnitudes[magnitudes.length - 1] };
    }
    var hi = quantile(kept, 0.95);
    if (!(hi > lo)) hi = max;
    return { diverging: false, lo: lo, hi: hi, clipped: hi < max };
  }
  function colourOf(scale, v) {
    if (!scale || !finite(v)) return null;
    if (scale.diverging) {
      var t = scale.hi > 0 ? v / scale.hi : 0;
      return t >= 0 ? mix(WHITE, HOT, Math.min(t, 1)) : mix(WHITE, COLD, Math.min(-t, 1));
    }
    var u = scale.hi > scale.lo ? (v - scale.lo) / (scale.hi - scale.lo) : 1;
    return mix(WHITE, HOT, 0.08 + 0.92 * u);
  }

  // Metric choices: per-sentence numbers, then the function tag and the VA tag.
  var metricSelect = q('.ts-metric');
  var groups = {};
  D.metrics.forEach(function (m, index) {
    if (!groups[m.group]) { groups[m.group] = el('optgroup'); groups[m.group].label = m.group; metricSelect.appendChild(groups[m.group]); }
    var o = el('option', null, m.label); o.value = 'm' + index; groups[m.group].appendChild(o);
  });
  var tagGroup = el('optgroup'); tagGroup.label = 'tags'; metricSelect.appendChild(tagGroup);
  [['tag', 'function tag'], ['va', 'VA tag (' + D.va_tag + ')'], ['none', 'nothing']].forEach(function (p) {
    var o = el('option', null, p[1]); o.value = p[0]; tagGroup.appendChild(o);
  });
  var firstTag = D.tags.map(function (tags) {
    for (var k = 0; k < tags.length; k++) if (tags[k] !== D.va_tag) return tags[k];
    return tags.length ? tags[0] : null;
  });
  var tagNames = [];
  firstTag.forEach(function (t) { if (t !== null && tagNames.indexOf(t) < 0) tagNames.push(t); });

  // The trace.
  var text = q('.ts-text');
  var spans = [];
  var fragment = document.createDocumentFragment();
  D.sentences.forEach(function (sentence, i) {
    var span = el('span', 'ts-s', sentence);
    span.dataset.i = i;
    spans.push(span);
    fragment.appendChild(span);
    fragment.appendChild(document.createTextNode(' '));
  });
  text.appendChild(fragment);

  function legendBar(scale, label) {
    var legend = q('.ts-legend');
    legend.textContent = '';
    legend.title = '';
    if (!scale) { legend.appendChild(el('span', 'ts-muted', label)); return; }
    var stops = scale.diverging ? [rgb(COLD), rgb(WHITE), rgb(HOT)] : [rgb(mix(WHITE, HOT, 0.08)), rgb(HOT)];
    legend.appendChild(el('span', 'ts-lo', (scale.clipped && scale.diverging ? '\u2264 ' : '') + fmt(scale.lo)));
    var bar = el('span', 'ts-bar');
    bar.style.background = 'linear-gradient(to right,' + stops.join(',') + ')';
    legend.appendChild(bar);
    legend.appendChild(el('span', 'ts-hi', (scale.clipped ? '\u2265 ' : '') + fmt(scale.hi)));
    legend.title = label;
  }

  function paintText() {
    var choice = metricSelect.value;
    var colours = [], titles = [];
    var legend = q('.ts-legend');
    if (choice.charAt(0) === 'm') {
      var metric = D.metrics[+choice.slice(1)];
      var scale = scaleOf(metric.values);
      metric.values.forEach(function (v, i) { colours[i] = colourOf(scale, v); titles[i] = metric.label + ': ' + fmt(v); });
      legendBar(scale, scale ? metric.description : 'no values');
      state.metric = metric.key;
    } else if (choice === 'tag') {
      firstTag.forEach(function (t, i) { colours[i] = t === null ? null : PALETTE[tagNames.indexOf(t) % PALETTE.length]; titles[i] = D.tags[i].join(', ') || 'no tag'; });
      legend.textContent = '';
      if (!tagNames.length) legend.appendChild(el('span', 'ts-muted', 'no function tags (chunks_labeled.json)'));
      tagNames.forEach(function (t, k) {
        var sw = el('span', 'ts-swatch', t); sw.style.background = rgb(PALETTE[k % PALETTE.length]); legend.appendChild(sw);
      });
      state.metric = 'tag';
    } else if (choice === 'va') {
      D.tags.forEach(function (tags, i) { var on = tags.indexOf(D.va_tag) >= 0; colours[i] = on ? HOT : null; titles[i] = on ? D.va_tag : 'untagged'; });
      legend.textContent = '';
      var sw = el('span', 'ts-swatch', D.va_tag); sw.style.background = rgb(HOT); sw.style.color = '#fff'; legend.appendChild(sw);
      state.metric = 'va';
    } else {
      legend.textContent = '';
      state.metric = 'none';
    }
    spans.forEach(function (span, i) {
      span.style.backgroundColor = colours[i] ? rgb(colours[i]) : '';
      span.title = '#' + i + ' \u00b7 ' + (titles[i] || '');
    });
  }

  // Heatmap of the chosen matrix (lower triangle; row = later sentence).
  var matrixSelect = q('.ts-matrix');
  D.matrices.forEach(function (m) { var o = el('option', null, m.label); o.value = m.key; matrixSelect.appendChild(o); });
  var canvas = q('.ts-heat');
  canvas.width = N; canvas.height = N;
  var limits = {};
  // Attention spans decades (a sink column, the diagonal, then ~1e-4): coloured on a log scale;
  // the other matrices (suppression is already a log) linearly. Limits: 1st-99th percentile.
  function logScaled(m) { return m.kind === 'attention'; }
  function shade(m, v) { return logScaled(m) ? Math.log10(Math.max(v, 1e-12)) : v; }
  function limitsOf(m) {
    if (limits[m.key]) return limits[m.key];
    var kept = [];
    for (var i = 1; i < N; i++) for (var j = 0; j < i; j++) { var v = at(m, i, j); if (finite(v)) kept.push(shade(m, v)); }
    if (!kept.length) for (var d = 0; d < N; d++) { var w = at(m, d, d); if (finite(w)) kept.push(shade(m, w)); }
    var values = new Float64Array(kept).sort();  // numeric sort, ~10x faster than a comparator
    var pick = function (p) { return values.length ? quantile(values, p) : 0; };
    limits[m.key] = { lo: pick(0.01), hi: pick(0.99) };
    return limits[m.key];
  }
  function paintHeatmap() {
    var m = byKey[matrixSelect.value];
    state.matrix = m ? m.key : null;
    var info = q('.ts-heatinfo');
    if (!m) {
      q('.ts-heatwrap').style.display = 'none';
      info.textContent = '';
      var miss = missing('attention');
      if (miss) info.appendChild(missingNote(miss));
      q('.ts-matrix').parentNode.style.display = 'none';
      return;
    }
    var lim = limitsOf(m), span = lim.hi > lim.lo ? lim.hi - lim.lo : 1;
    var ctx = canvas.getContext('2d');
    var image = ctx.createImageData(N, N), px = image.data;
    for (var i = 0; i < N; i++) {
      for (var j = 0; j < N; j++) {
        var o = (i * N + j) * 4, c;
        if (j > i) { c = [245, 245, 245]; } else {
          var v = at(m, i, j);
          c = finite(v) ? LUT[Math.max(0, Math.min(255, Math.round((shade(m, v) - lim.lo) / span * 255)))] : [225, 225, 225];
        }
        px[o] = c[0]; px[o + 1] = c[1]; px[o + 2] = c[2]; px[o + 3] = 255;
      }
    }
    ctx.putImageData(image, 0, 0);
    info.textContent = m.label + ': rows = ' + m.row_meaning + ', columns = ' + m.column_meaning +
      (logScaled(m) ? '; log colour scale ' + fmt(Math.pow(10, lim.lo)) + ' \u2026 ' + fmt(Math.pow(10, lim.hi)) : '; colour ' + fmt(lim.lo) + ' \u2026 ' + fmt(lim.hi)) +
      ' (1st\u201399th percentile below the diagonal). Click a cell.';
  }

  function unmark() {
    state.marked.forEach(function (pair) { pair[0].classList.remove(pair[1]); });
    state.marked = [];
  }
  function mark(i, cls) { spans[i].classList.add(cls); state.marked.push([spans[i], cls]); }
  function place(cls, row, col) {
    var box = q(cls);
    if (row === null) { box.style.display = 'none'; return; }
    box.style.display = 'block';
    if (cls === '.ts-hline') { box.style.top = ((row + 0.5) / N * 100) + '%'; }
    else if (cls === '.ts-vline') { box.style.left = ((col + 0.5) / N * 100) + '%'; }
    else { box.style.top = (row / N * 100) + '%'; box.style.left = (col / N * 100) + '%'; box.style.width = box.style.height = 'max(' + (100 / N) + '%, 6px)'; }
  }

  // The largest values of row `i` over earlier columns, or of column `i` over later rows.
  function topOfRow(m, i) {
    var items = [];
    for (var j = 0; j < i; j++) { var v = at(m, i, j); if (finite(v)) items.push([j, v]); }
    return best(items);
  }
  function topOfColumn(m, i) {
    var items = [];
    for (var r = i + 1; r < N; r++) { var v = at(m, r, i); if (finite(v)) items.push([r, v]); }
    return best(items);
  }
  function best(items) {
    items.sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
    return items.slice(0, TOP);
  }
  function preview(i) { var t = D.sentences[i]; return t.length > 90 ? t.slice(0, 89) + '\u2026' : t; }
  function list(title, name, items, cls) {
    var box = el('div', 'ts-list');
    box.appendChild(el('h4', null, title));
    if (!items.length) { box.appendChild(el('p', 'ts-muted', 'none')); return box; }
    var ol = el('ol');
    items.forEach(function (item) {
      var li = el('li', 'ts-item ' + cls + '-item');
      li.dataset.list = name; li.dataset.i = item[0]; li.dataset.v = String(item[1]);
      li.appendChild(el('span', 'ts-idx', '#' + item[0]));
      li.appendChild(el('span', 'ts-val', fmt(item[1])));
      li.appendChild(el('span', 'ts-prev', preview(item[0])));
      li.addEventListener('click', function () { select(item[0]); });
      ol.appendChild(li);
    });
    box.appendChild(ol);
    return box;
  }

  // Token view (CircuitsVis-style): sentence i's first tokens (rows) attending to the first tokens
  // of its top source j (columns), one grid per head kept. A value is its code / 1000 times the
  // block's largest value (the JSON's `scales`); cells white to blue up to that largest value,
  // drawn on a canvas (a thousand table cells per click cost several frames), the hovered cell
  // described below it.
  var CELL = 13;
  function tokenText(t) { return t.replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5'); }
  function tokenValue(th, i, k) { return th.values[i][k] / 1000 * th.scales[i]; }
  function tokenLabel(cls, token) { var e = el('div', cls, tokenText(token)); e.title = JSON.stringify(token); return e; }
  function tokenGrid(th, i, j) {
    var tv = D.token_view, codes = th.values[i];
    var rows = Math.min(tv.max_tokens, tv.lengths[i]), cols = Math.min(tv.max_tokens, tv.lengths[j]);
    var box = el('div', 'ts-tok');
    box.dataset.head = th.head[0] + '.' + th.head[1]; box.dataset.i = i; box.dataset.j = j;
    box.dataset.mean = String(th.means[i]); box.dataset.scale = String(th.scales[i]);
    box.dataset.rows = rows; box.dataset.cols = cols;
    box.appendChild(el('div', 'ts-tokcap', 'layer ' + th.head[0] + ' head ' + th.head[1] + ': #' + i + ' \u2192 #' + j +
      ' \u00b7 block mean ' + fmt(th.means[i]) + ', largest ' + fmt(th.scales[i]) + ' \u00b7 first ' + rows + ' of ' + tv.lengths[i] +
      ' \u00d7 ' + cols + ' of ' + tv.lengths[j] + ' tokens'));
    var body = el('div', 'ts-tokbody');
    body.appendChild(el('div'));
    var top = el('div', 'ts-tokcols');
    for (var c = 0; c < cols; c++) top.appendChild(tokenLabel('ts-tokk', tv.tokens[j][c]));
    body.appendChild(top);
    var left = el('div', 'ts-tokrows');
    for (var r = 0; r < rows; r++) left.appendChild(tokenLabel('ts-tokq', tv.tokens[i][r]));
    body.appendChild(left);
    var canvas = el('canvas', 'ts-tokcells');
    canvas.width = cols * CELL; canvas.height = rows * CELL;
    var ctx = canvas.getContext('2d');
    for (var k = 0; k < rows * cols; k++) {
      ctx.fillStyle = rgb(mix(WHITE, COLD, codes[k] / 1000));
      ctx.fillRect((k % cols) * CELL, Math.floor(k / cols) * CELL, CELL - 1, CELL - 1);
    }
    body.appendChild(canvas);
    box.appendChild(body);
    var hover = el('div', 'ts-tokhover ts-muted', 'Hover a cell for its tokens and value.');
    box.appendChild(hover);
    canvas.addEventListener('mousemove', function (event) {
      var rect = canvas.getBoundingClientRect();
      var c = Math.min(cols - 1, Math.floor((event.clientX - rect.left) / rect.width * cols));
      var r = Math.min(rows - 1, Math.floor((event.clientY - rect.top) / rect.height * rows));
      var v = tokenValue(th, i, r * cols + c);
      hover.dataset.r = r; hover.dataset.c = c; hover.dataset.v = String(v);
      hover.textContent = JSON.stringify(tv.tokens[i][r]) + ' \u2192 ' + JSON.stringify(tv.tokens[j][c]) + ': ' + fmt(v);
    });
    return box;
  }
  // The token grids of sentence i with its top source in each head kept, or (j given) of the
  // pair (i, j) in the heads whose top source for i is j.
  function tokenSection(i, j) {
    var tv = D.token_view, box = el('div', 'ts-tokens');
    box.appendChild(el('h4', null, j === null ? 'Token view: #' + i + ' and its top source in each head' : 'Token view of #' + i + ' \u2192 #' + j));
    if (j === null) box.appendChild(el('p', 'ts-muted', 'Rows: its first tokens; columns: the source\u2019s. The sentence holding the first token (where attention sinks) is passed over when there is another.'));
    var shown = 0;
    tv.heads.forEach(function (th) {
      var src = th.sources[i];
      if (src === null || src === undefined || (j !== null && src !== j)) return;
      box.appendChild(tokenGrid(th, i, src)); shown++;
    });
    if (!shown) {
      var names = tv.heads.map(function (th) { return th.head[0] + '.' + th.head[1]; }).join(', ');
      box.appendChild(el('p', 'ts-muted', j === null ? 'No earlier sentence with tokens.' :
        'Not in the page: it keeps each sentence\u2019s top source in heads ' + names + ', and #' + j + ' is none of them for #' + i + '.'));
    }
    return box;
  }

  function timed(work) {
    var t0 = performance.now();
    work();
    root.dataset.scriptMs = (performance.now() - t0).toFixed(2);
    requestAnimationFrame(function () {
      setTimeout(function () { root.dataset.paintMs = (performance.now() - t0).toFixed(2); root.dataset.clicks = (+(root.dataset.clicks || 0) + 1); }, 0);
    });
  }

  function select(i) { timed(function () { selectNow(i); }); }
  function selectNow(i) {
    unmark();
    state.selected = i; state.cell = null;
    mark(i, 'ts-sel');
    place('.ts-mark', null); place('.ts-hline', i, i); place('.ts-vline', i, i);
    q('.ts-cell').textContent = '';
    var panel = q('.ts-panel');
    panel.textContent = '';
    panel.dataset.i = i;
    panel.appendChild(el('h3', null, 'Sentence #' + i));
    panel.appendChild(el('blockquote', 'ts-quote', D.sentences[i]));
    if (D.tags[i].length) panel.appendChild(el('p', 'ts-tags', 'tags: ' + D.tags[i].join(', ')));
    var m = byKey[matrixSelect.value];
    if (m && m.kind === 'attention') {
      var row = topOfRow(m, i), col = topOfColumn(m, i);
      row.forEach(function (item) { mark(item[0], 'ts-src'); });
      col.forEach(function (item) { mark(item[0], 'ts-dst'); });
      panel.appendChild(list('Attends most to (' + m.label + ')', 'attends-to', row, 'ts-src'));
      panel.appendChild(list('Later sentences attending to it most', 'attended-by', col, 'ts-dst'));
    } else if (!m) {
      var miss = missing('attention');
      if (miss) panel.appendChild(missingNote(miss));
    }
    if (D.token_view) panel.appendChild(tokenSection(i, null));
    else if (missing('token view')) panel.appendChild(missingNote(missing('token view')));
    var supp = byKey.suppression;
    if (supp) {
      panel.appendChild(list('Suppression row: suppressing these earlier sentences moves this one most', 'supp-row', topOfRow(supp, i), 'ts-src'));
      panel.appendChild(list('Suppression column: suppressing this sentence moves these later ones most', 'supp-col', topOfColumn(supp, i), 'ts-dst'));
    } else if (missing('suppression')) {
      panel.appendChild(missingNote(missing('suppression')));
    }
    var step = byKey.step_importance;
    if (step) {
      panel.appendChild(list('step_importance.json: earlier sentences it depends on', 'step-row', topOfRow(step, i), 'ts-src'));
      panel.appendChild(list('step_importance.json: later sentences depending on it', 'step-col', topOfColumn(step, i), 'ts-dst'));
    }
    var table = el('table', 'ts-nums');
    D.metrics.forEach(function (metric) {
      var tr = el('tr', 'ts-num');
      tr.dataset.key = metric.key; tr.dataset.v = String(metric.values[i]);
      tr.appendChild(el('td', null, metric.label));
      tr.appendChild(el('td', 'ts-val', fmt(metric.values[i])));
      table.appendChild(tr);
    });
    panel.appendChild(el('h4', null, 'Numbers'));
    panel.appendChild(table);
    if (!D.metrics.some(function (x) { return x.group === 'resampling'; }) && missing('resampling')) panel.appendChild(missingNote(missing('resampling')));
    var alternatives = D.alternatives[i];
    if (alternatives && alternatives.length) {
      panel.appendChild(el('h4', null, 'Resampled alternatives'));
      var ul = el('ul', 'ts-alts');
      alternatives.forEach(function (a) {
        var li = el('li', a.is_correct === true ? 'ts-ok' : a.is_correct === false ? 'ts-bad' : '');
        li.appendChild(el('span', null, a.text));
        if (a.answer) li.appendChild(el('b', null, ' \u2192 ' + a.answer));
        ul.appendChild(li);
      });
      panel.appendChild(ul);
    }
  }

  function selectCell(row, col) { timed(function () { selectCellNow(row, col); }); }
  function selectCellNow(row, col) {
    var m = byKey[matrixSelect.value];
    if (!m) return;
    unmark();
    state.cell = [row, col]; state.selected = null;
    mark(row, 'ts-from'); mark(col, 'ts-to');
    place('.ts-hline', null); place('.ts-vline', null); place('.ts-mark', row, col);
    var box = q('.ts-cell');
    box.textContent = '';
    box.dataset.row = row; box.dataset.col = col;
    var v = at(m, row, col);
    box.dataset.v = String(v);
    box.appendChild(el('b', null, m.label + ' [#' + row + ', #' + col + '] = '));
    box.appendChild(el('span', 'ts-val', fmt(v)));
    var others = el('ul');
    D.matrices.forEach(function (other) {
      if (other.key === m.key) return;
      var li = el('li', 'ts-other', other.label + ': ' + fmt(at(other, row, col)));
      li.dataset.key = other.key; li.dataset.v = String(at(other, row, col));
      others.appendChild(li);
    });
    box.appendChild(others);
    box.appendChild(el('p', 'ts-pair', '#' + row + ' (' + m.row_meaning + '): ' + preview(row)));
    box.appendChild(el('p', 'ts-pair', '#' + col + ' (' + m.column_meaning + '): ' + preview(col)));
    if (D.token_view && col < row) box.appendChild(tokenSection(row, col));
    spans[col].scrollIntoView({ block: 'nearest' });
    spans[row].scrollIntoView({ block: 'nearest' });
  }

  text.addEventListener('click', function (event) {
    var span = event.target.closest('.ts-s');
    if (span && root.contains(span)) select(+span.dataset.i);
  });
  canvas.addEventListener('click', function (event) {
    var rect = canvas.getBoundingClientRect();
    var col = Math.min(N - 1, Math.floor((event.clientX - rect.left) / rect.width * N));
    var row = Math.min(N - 1, Math.floor((event.clientY - rect.top) / rect.height * N));
    if (col > row) { q('.ts-cell').textContent = 'Above the diagonal: a sentence does not attend to later ones.'; return; }
    selectCell(row, col);
  });
  metricSelect.addEventListener('change', function () { timed(paintText); });
  matrixSelect.addEventListener('change', function () {
    timed(function () {
      paintHeatmap();
      if (state.selected !== null) selectNow(state.selected);
      else if (state.cell) selectCellNow(state.cell[0], state.cell[1]);
    });
  });

  // Defaults: the receiver score if there is one, else the first metric, else the function tag.
  var receiverIndex = -1;
  D.metrics.forEach(function (m, index) { if (m.key === 'receiver' && receiverIndex < 0) receiverIndex = index; });
  metricSelect.value = receiverIndex >= 0 ? 'm' + receiverIndex : D.metrics.length ? 'm0' : 'tag';
  paintText();
  root.tsExplorer = { data: D, select: select, selectCell: selectCell, state: state };
  root.dataset.initMs = (performance.now() - started).toFixed(2);
  // The text paints first; the heatmap (N² cells) right after, in its own task.
  setTimeout(function () {
    var t0 = performance.now();
    paintHeatmap();
    root.dataset.heatmapMs = (performance.now() - t0).toFixed(2);
    root.dataset.ready = '1';
  }, 0);
}
