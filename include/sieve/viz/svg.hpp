#pragma once
/// Self-contained SVG plots (no external fonts, scripts or stylesheets): line charts for
/// training curves, horizontal bar charts, the MAP@5-versus-threshold curve with its chosen
/// point, and scatter plots coloured by class. Each function returns one <svg> document string.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/detail/text.hpp"  // utf8_sequence_length

namespace sieve::viz {

/// Escape text for XML/HTML content and attributes; control characters XML 1.0 forbids and
/// invalid UTF-8 become U+FFFD, so a hostile label cannot break the document.
inline std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80) {
      const std::size_t n = io::detail::utf8_sequence_length(s, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";
      } else {
        out.append(s.substr(i, n));
        i += n - 1;
      }
      continue;
    }
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') out += "\xEF\xBF\xBD";
        else out += ch;
    }
  }
  return out;
}

/// The i-th of a fixed categorical palette (Tableau 10, then 10 lighter tones, with Tableau's
/// greys replaced: grey is reserved for -1 / test points), then evenly spaced hues for classes
/// beyond 20, so any class count gets distinct-looking colours.
inline std::string palette_color(std::size_t i) {
  static constexpr const char* base[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                                         "#393b79", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
                                         "#c5b0d5", "#c49c94", "#f7b6d2", "#637939", "#dbdb8d", "#9edae5"};
  if (i < 20) return base[i];
  // Golden-angle hue steps keep neighbouring class ids apart.
  const double h = std::fmod(static_cast<double>(i) * 137.50776, 360.0);
  const int lightness = 40 + static_cast<int>(i % 3) * 10;
  char buf[40];
  std::snprintf(buf, sizeof buf, "hsl(%.1f,65%%,%d%%)", h, lightness);
  return buf;
}

namespace detail {

/// At most `max_bytes` of s, cut on a UTF-8 boundary, with "~" when something was dropped.
inline std::string shorten(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  std::size_t n = max_bytes > 0 ? max_bytes - 1 : 0;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // not inside a sequence
  return std::string(s.substr(0, n)) + "~";
}

inline std::string num(double v) {
  if (!std::isfinite(v)) return "0";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

/// Tick labels: up to 4 significant digits, no trailing zeros, exponent for extremes.
inline std::string tick_label(double v) {
  if (std::abs(v) < 1e-12) return "0";
  char buf[32];
  if (std::abs(v) >= 1e5 || std::abs(v) < 1e-3) std::snprintf(buf, sizeof buf, "%.2g", v);
  else std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

/// "Nice" ticks (1, 2, 5 x 10^k steps, at least min_step apart: 1 for integer axes such as
/// epochs) covering [lo, hi]; lo/hi are widened to tick multiples.
inline std::vector<double> nice_ticks(double& lo, double& hi, int target = 6, double min_step = 0) {
  if (!(hi > lo)) {  // constant or empty data: open a unit window around it
    const double c = std::isfinite(lo) ? lo : 0.0;
    lo = c - 0.5;
    hi = c + 0.5;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = std::max((f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag, min_step);
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> t;
  for (double v = lo; v <= hi + step * 1e-6 && t.size() < 50; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

struct Frame {
  double W, H, left, right, top, bottom, x0, x1, y0, y1;
  double px(double x) const { return left + (x - x0) / (x1 - x0) * (W - left - right); }
  double py(double y) const { return H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom); }
};

inline std::string svg_open(double W, double H, std::string_view title) {
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W) + "\" height=\"" + num(H) +
                  "\" viewBox=\"0 0 " + num(W) + " " + num(H) +
                  "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  s += "<title>" + xml_escape(title) + "</title>\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(W / 2) + "\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">" +
       xml_escape(title) + "</text>\n";
  return s;
}

/// Axes, grid lines, ticks and axis labels for a frame; updates fr's data window to the ticks.
inline std::string axes(Frame& fr, double xmin, double xmax, double ymin, double ymax, std::string_view xlabel,
                        std::string_view ylabel, bool integer_x = false) {
  const auto xt = nice_ticks(xmin, xmax, 8, integer_x ? 1.0 : 0.0);
  const auto yt = nice_ticks(ymin, ymax, 6);
  fr.x0 = xmin, fr.x1 = xmax, fr.y0 = ymin, fr.y1 = ymax;
  std::string s = "<g stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  for (double v : yt)
    s += "<line x1=\"" + num(fr.left) + "\" y1=\"" + num(fr.py(v)) + "\" x2=\"" + num(fr.W - fr.right) + "\" y2=\"" +
         num(fr.py(v)) + "\"/>\n";
  for (double v : xt)
    s += "<line x1=\"" + num(fr.px(v)) + "\" y1=\"" + num(fr.top) + "\" x2=\"" + num(fr.px(v)) + "\" y2=\"" +
         num(fr.H - fr.bottom) + "\"/>\n";
  s += "</g>\n<g fill=\"#333\">\n";
  for (double v : yt)
    s += "<text x=\"" + num(fr.left - 6) + "\" y=\"" + num(fr.py(v) + 4) + "\" text-anchor=\"end\">" + tick_label(v) +
         "</text>\n";
  for (double v : xt)
    s += "<text x=\"" + num(fr.px(v)) + "\" y=\"" + num(fr.H - fr.bottom + 16) + "\" text-anchor=\"middle\">" +
         tick_label(v) + "</text>\n";
  s += "<text x=\"" + num((fr.left + fr.W - fr.right) / 2) + "\" y=\"" + num(fr.H - 8) +
       "\" text-anchor=\"middle\">" + xml_escape(xlabel) + "</text>\n";
  s += "<text transform=\"translate(14," + num((fr.top + fr.H - fr.bottom) / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + xml_escape(ylabel) + "</text>\n</g>\n";
  s += "<rect x=\"" + num(fr.left) + "\" y=\"" + num(fr.top) + "\" width=\"" + num(fr.W - fr.left - fr.right) +
       "\" height=\"" + num(fr.H - fr.top - fr.bottom) + "\" fill=\"none\" stroke=\"#888\"/>\n";
  return s;
}

inline std::string legend(const Frame& fr, std::span<const std::string> names, std::span<const std::string> colors,
                          bool dots, std::span<const char> dashed = {}) {
  std::string s = "<g font-size=\"11\">\n";
  const double x = fr.W - fr.right + 10;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const double y = fr.top + 8 + 16 * static_cast<double>(i);
    if (dots)
      s += "<circle cx=\"" + num(x + 6) + "\" cy=\"" + num(y) + "\" r=\"4\" fill=\"" + colors[i] + "\"/>\n";
    else
      s += "<line x1=\"" + num(x) + "\" y1=\"" + num(y) + "\" x2=\"" + num(x + 14) + "\" y2=\"" + num(y) +
           "\" stroke=\"" + colors[i] + "\" stroke-width=\"2.5\"" +
           (i < dashed.size() && dashed[i] ? " stroke-dasharray=\"6 4\"" : "") + "/>\n";
    s += "<text x=\"" + num(x + 20) + "\" y=\"" + num(y + 4) + "\">" + xml_escape(names[i]) + "</text>\n";
  }
  return s + "</g>\n";
}

}  // namespace detail

/// One line of a line chart; NaN/inf points are skipped (the line breaks there).
struct Series {
  std::string name;
  std::vector<double> x, y;
  std::string color;  ///< empty: palette colour by index
  bool dashed = false;
  bool markers = false;
};

/// A labelled point drawn on top of a chart (e.g. the chosen threshold).
struct Marker {
  double x = 0, y = 0;
  std::string label;
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  std::vector<Marker> markers;
  bool log_y = false;  ///< plot log10(y) (for learning rates); non-positive values are skipped
  bool integer_x = false;  ///< x ticks only at whole numbers (epochs)
  std::optional<double> y_min, y_max;
  double width = 720, height = 420;
};

/// Render a line chart with axes, nice ticks, grid and a legend to the right.
/// Requires: each series has x.size() == y.size().
inline std::string line_chart(const LineChart& c) {
  for (const auto& s : c.series)
    SIEVE_CHECK(s.x.size() == s.y.size(), "line_chart '", c.title, "': series '", s.name, "' has ", s.x.size(),
                " x values but ", s.y.size(), " y values");
  const auto ty = [&](double y) {
    return c.log_y ? (y > 0 ? std::log10(y) : std::numeric_limits<double>::quiet_NaN()) : y;
  };
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& s : c.series)
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      const double y = ty(s.y[i]);
      if (!std::isfinite(s.x[i]) || !std::isfinite(y)) continue;
      xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  if (!(xmin <= xmax)) xmin = 0, xmax = 1;
  if (!(ymin <= ymax)) ymin = 0, ymax = 1;
  if (c.y_min) ymin = ty(*c.y_min);
  if (c.y_max) ymax = ty(*c.y_max);
  double longest = 0;
  for (const auto& s : c.series) longest = std::max(longest, static_cast<double>(s.name.size()));
  detail::Frame fr{c.width, c.height, 64, c.series.empty() ? 20.0 : 40 + 7 * std::min(longest, 24.0), 34, 44, 0, 1, 0, 1};
  std::string s = detail::svg_open(c.width, c.height, c.title);
  s += detail::axes(fr, xmin, xmax, ymin, ymax, c.x_label, c.log_y ? "log10 " + c.y_label : c.y_label, c.integer_x);
  std::vector<std::string> names, colors;
  std::vector<char> dashed_flags;
  for (std::size_t k = 0; k < c.series.size(); ++k) {
    const auto& se = c.series[k];
    const std::string color = se.color.empty() ? palette_color(k) : se.color;
    names.push_back(se.name);
    colors.push_back(color);
    dashed_flags.push_back(se.dashed);
    std::string pts;
    auto flush = [&] {
      if (!pts.empty())
        s += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\"" +
             (se.dashed ? " stroke-dasharray=\"6 4\"" : "") + " points=\"" + pts + "\"/>\n";
      pts.clear();
    };
    for (std::size_t i = 0; i < se.x.size(); ++i) {
      const double y = ty(se.y[i]);
      if (!std::isfinite(se.x[i]) || !std::isfinite(y)) {
        flush();
        continue;
      }
      pts += detail::num(fr.px(se.x[i])) + "," + detail::num(fr.py(y)) + " ";
      if (se.markers)
        s += "<circle cx=\"" + detail::num(fr.px(se.x[i])) + "\" cy=\"" + detail::num(fr.py(y)) +
             "\" r=\"3\" fill=\"" + color + "\"/>\n";
    }
    flush();
  }
  for (const auto& m : c.markers) {
    const double y = ty(m.y);
    if (!std::isfinite(m.x) || !std::isfinite(y)) continue;
    const double X = fr.px(m.x), Y = fr.py(y);
    s += "<line x1=\"" + detail::num(X) + "\" y1=\"" + detail::num(fr.top) + "\" x2=\"" + detail::num(X) + "\" y2=\"" +
         detail::num(fr.H - fr.bottom) + "\" stroke=\"#d62728\" stroke-dasharray=\"3 3\"/>\n";
    s += "<circle cx=\"" + detail::num(X) + "\" cy=\"" + detail::num(Y) +
         "\" r=\"5\" fill=\"#d62728\" stroke=\"white\" stroke-width=\"1.5\"/>\n";
    const bool right_half = X > (fr.left + fr.W - fr.right) / 2;
    const double label_y = Y - 8 < fr.top + 14 ? Y + 18 : Y - 8;  // keep the label inside the frame
    s += "<text x=\"" + detail::num(X + (right_half ? -8 : 8)) + "\" y=\"" + detail::num(label_y) + "\" text-anchor=\"" +
         (right_half ? "end" : "start") + "\" fill=\"#d62728\">" + xml_escape(m.label) + "</text>\n";
  }
  if (!c.series.empty()) s += detail::legend(fr, names, colors, false, dashed_flags);
  return s + "</svg>\n";
}

/// MAP@5 against the -1 threshold with the chosen point marked.
/// Requires: thresholds.size() == map5.size().
inline std::string threshold_chart(std::span<const double> thresholds, std::span<const double> map5, double chosen,
                                   double chosen_map5, std::string title = "Validation MAP@5 vs threshold for -1") {
  SIEVE_CHECK(thresholds.size() == map5.size(), "threshold_chart: ", thresholds.size(), " thresholds but ",
              map5.size(), " MAP@5 values");
  LineChart c;
  c.title = std::move(title);
  c.x_label = "threshold (-1 ranks as if it scored this)";
  c.y_label = "MAP@5";
  c.series.push_back({"validation MAP@5", {thresholds.begin(), thresholds.end()}, {map5.begin(), map5.end()}, "#1f77b4",
                      false, false});
  char buf[96];
  std::snprintf(buf, sizeof buf, "chosen t=%.3g, MAP@5=%.4f", chosen, chosen_map5);
  c.markers.push_back({chosen, chosen_map5, buf});
  return line_chart(c);
}

struct BarChart {
  std::string title, value_label;
  std::vector<std::string> labels;
  std::vector<double> values;
  std::string color = "#1f77b4";
  double width = 720;
};

/// Horizontal bars, one per label in the given order, values printed at the bar ends.
/// Requires: labels.size() == values.size(); values finite and >= 0.
inline std::string bar_chart(const BarChart& c) {
  SIEVE_CHECK(c.labels.size() == c.values.size(), "bar_chart '", c.title, "': ", c.labels.size(), " labels but ",
              c.values.size(), " values");
  double vmax = 0;
  for (std::size_t i = 0; i < c.values.size(); ++i) {
    SIEVE_CHECK(std::isfinite(c.values[i]) && c.values[i] >= 0, "bar_chart '", c.title, "': value ", i, " (",
                c.values[i], ") must be finite and >= 0");
    vmax = std::max(vmax, c.values[i]);
  }
  double longest = 4;
  for (const auto& l : c.labels) longest = std::max(longest, static_cast<double>(std::min<std::size_t>(l.size(), 30)));
  const double bar = 20, gap = 6;
  const double H = 34 + 44 + (bar + gap) * static_cast<double>(std::max<std::size_t>(c.labels.size(), 1));
  detail::Frame fr{c.width, H, 16 + 7 * longest, 60, 34, 44, 0, 1, 0, 1};
  std::string s = detail::svg_open(c.width, H, c.title);
  double lo = 0, hi = vmax > 0 ? vmax : 1;
  const auto ticks = detail::nice_ticks(lo, hi, 6);
  fr.x0 = lo, fr.x1 = hi;
  for (double v : ticks) {
    s += "<line x1=\"" + detail::num(fr.px(v)) + "\" y1=\"" + detail::num(fr.top) + "\" x2=\"" + detail::num(fr.px(v)) +
         "\" y2=\"" + detail::num(H - fr.bottom) + "\" stroke=\"#e5e5e5\"/>\n";
    s += "<text x=\"" + detail::num(fr.px(v)) + "\" y=\"" + detail::num(H - fr.bottom + 16) +
         "\" text-anchor=\"middle\" fill=\"#333\">" + detail::tick_label(v) + "</text>\n";
  }
  for (std::size_t i = 0; i < c.labels.size(); ++i) {
    const double y = fr.top + gap / 2 + (bar + gap) * static_cast<double>(i);
    const std::string label = detail::shorten(c.labels[i], 30);
    s += "<text x=\"" + detail::num(fr.left - 6) + "\" y=\"" + detail::num(y + bar * 0.7) + "\" text-anchor=\"end\">" +
         xml_escape(label) + "</text>\n";
    s += "<rect x=\"" + detail::num(fr.left) + "\" y=\"" + detail::num(y) + "\" width=\"" +
         detail::num(fr.px(c.values[i]) - fr.left) + "\" height=\"" + detail::num(bar) + "\" fill=\"" + c.color +
         "\"><title>" + xml_escape(c.labels[i]) + ": " + detail::tick_label(c.values[i]) + "</title></rect>\n";
    s += "<text x=\"" + detail::num(fr.px(c.values[i]) + 4) + "\" y=\"" + detail::num(y + bar * 0.7) +
         "\" font-size=\"11\" fill=\"#333\">" + detail::tick_label(c.values[i]) + "</text>\n";
  }
  s += "<text x=\"" + detail::num((fr.left + c.width - fr.right) / 2) + "\" y=\"" + detail::num(H - 8) +
       "\" text-anchor=\"middle\">" + xml_escape(c.value_label) + "</text>\n";
  return s + "</svg>\n";
}

struct ScatterPlot {
  std::string title;
  std::vector<double> x, y;
  std::vector<std::int64_t> cls;          ///< class per point, in [0, class_names.size()) or -1 (drawn grey)
  std::vector<std::string> class_names;   ///< legend entries
  double point_radius = 2.0, opacity = 0.75;
  double width = 760, height = 600;
};

/// Points coloured by class with a legend (classes beyond 40 are coloured but not listed).
/// Requires: x, y, cls of equal size; cls in [-1, class_names.size()).
inline std::string scatter_plot(const ScatterPlot& c) {
  const std::size_t N = c.x.size(), C = c.class_names.size();
  SIEVE_CHECK(c.y.size() == N && c.cls.size() == N, "scatter_plot '", c.title, "': x has ", N, " values, y ",
              c.y.size(), ", cls ", c.cls.size());
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (std::size_t i = 0; i < N; ++i) {
    SIEVE_CHECK(c.cls[i] >= -1 && c.cls[i] < static_cast<std::int64_t>(C), "scatter_plot '", c.title, "': cls[", i,
                "]=", c.cls[i], " outside [-1, ", C, ")");
    if (!std::isfinite(c.x[i]) || !std::isfinite(c.y[i])) continue;
    xmin = std::min(xmin, c.x[i]), xmax = std::max(xmax, c.x[i]);
    ymin = std::min(ymin, c.y[i]), ymax = std::max(ymax, c.y[i]);
  }
  if (!(xmin <= xmax)) xmin = 0, xmax = 1;
  if (!(ymin <= ymax)) ymin = 0, ymax = 1;
  double longest = 0;
  for (const auto& n : c.class_names) longest = std::max(longest, static_cast<double>(std::min<std::size_t>(n.size(), 24)));
  detail::Frame fr{c.width, c.height, 56, C ? 40 + 7 * longest : 20.0, 34, 44, 0, 1, 0, 1};
  std::string s = detail::svg_open(c.width, c.height, c.title);
  s += detail::axes(fr, xmin, xmax, ymin, ymax, "", "");
  // Grouped by class so each class is one <g> with a shared fill: smaller files, and a
  // reader can toggle a class in an editor.
  for (std::int64_t k = -1; k < static_cast<std::int64_t>(C); ++k) {
    std::string g;
    for (std::size_t i = 0; i < N; ++i)
      if (c.cls[i] == k && std::isfinite(c.x[i]) && std::isfinite(c.y[i]))
        g += "<circle cx=\"" + detail::num(fr.px(c.x[i])) + "\" cy=\"" + detail::num(fr.py(c.y[i])) + "\" r=\"" +
             detail::num(c.point_radius) + "\"/>\n";
    if (g.empty()) continue;
    const std::string color = k < 0 ? "#b0b0b0" : palette_color(static_cast<std::size_t>(k));
    s += "<g fill=\"" + color + "\" fill-opacity=\"" + detail::num(c.opacity) + "\">\n" + g + "</g>\n";
  }
  const std::size_t shown = std::min<std::size_t>(C, 40);
  std::vector<std::string> names(c.class_names.begin(), c.class_names.begin() + static_cast<std::ptrdiff_t>(shown)),
      colors;
  for (auto& n : names) n = detail::shorten(n, 24);
  for (std::size_t k = 0; k < shown; ++k) colors.push_back(palette_color(k));
  s += detail::legend(fr, names, colors, true);
  return s + "</svg>\n";
}

}  // namespace sieve::viz
