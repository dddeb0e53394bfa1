// correlate.js: the `lwb correlate` page. Two line charts (kernel duration, kernel end time), one
// series per timeline, x = position in the reference timeline, labelled by its kernels.
(function () {
  var data = JSON.parse(document.getElementById("lwb-data").textContent);
  document.getElementById("title").textContent = data.title;
  document.getElementById("subtitle").textContent = data.series.length + " timelines aligned to " +
    data.series[0].series + " by the shortest common supersequence of kernel names. Times in microseconds.";
  var labels = data.series[0].points.map(function (p) { return p.name; });
  [["duration", "Kernel Duration"], ["end", "Kernel End Time"]].forEach(function (c) {
    lwbLines(document.getElementById(c[0]), {title: c[1], labels: labels, unit: "us",
      series: data.series.map(function (s) {
        return {name: s.series, points: s.points.map(function (p) { return {x: p.x, y: p[c[0]], name: p.name}; })};
      })});
  });
})();
