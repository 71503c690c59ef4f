(function () {
  var table = document.getElementById('rows-table');
  var body = table.tBodies[0];
  var filter = document.getElementById('filter');
  var status = document.getElementById('status-filter');
  var shown = document.getElementById('shown');
  function apply() {
    var text = filter.value.toLowerCase(), want = status.value, n = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var ok = (!want || row.dataset.status === want) &&
        (!text || row.textContent.toLowerCase().indexOf(text) >= 0);
      row.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = n + ' of ' + body.rows.length + ' rows shown';
  }
  filter.addEventListener('input', apply);
  status.addEventListener('change', apply);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
    var button = th.querySelector('button');
    if (!button) { return; }
    button.addEventListener('click', function () {
      var down = th.getAttribute('aria-sort') === 'ascending';
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
        other.removeAttribute('aria-sort');
      });
      th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[index].dataset.key || a.cells[index].textContent;
        var y = b.cells[index].dataset.key || b.cells[index].textContent;
        var order = x.localeCompare(y, undefined, {numeric: true});
        return down ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('td.cell'), function (cell) {
    cell.addEventListener('click', function () {
      filter.value = cell.dataset.membership;
      status.value = '';
      apply();
      table.scrollIntoView();
    });
  });
  apply();
}());
