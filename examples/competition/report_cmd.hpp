#pragma once
/// `sieve report --run RUN [--data DIR] [--solution L.csv]`: RUN/report/index.html, one offline
/// page a person would rather look at than read: training curves (loss, validation MAP@5, lr),
/// the validation MAP@5-versus-threshold curves of every ranking method, a bar chart of the 20
/// most predicted test labels, PNG grids of test images predicted as the top classes beside
/// train samples of those classes, and 2-D UMAP projections of the embeddings (train by
/// class; 20 random classes; train with test) computed by sieve. Every section whose inputs
/// are missing (no predict yet, no data folder) says so instead of failing the whole page.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common.hpp"
#include "predict_cmd.hpp"
#include "run.hpp"
#include "sieve/augment/resize.hpp"
#include "sieve/core/rng.hpp"
#include "sieve/core/shuffle.hpp"
#include "sieve/io/data_folder.hpp"
#include "sieve/io/image.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/io/submission.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/metrics/summary.hpp"
#include "sieve/train/metrics_log.hpp"
#include "sieve/viz/html.hpp"
#include "sieve/viz/svg.hpp"
#include "sieve/viz/umap.hpp"

namespace sieve::cli {

namespace report_detail {

/// metrics.jsonl as columns: key -> values per epoch line (NaN where a line lacks the key).
struct MetricsTable {
  std::vector<double> epoch;
  std::map<std::string, std::vector<double>> cols;
};

/// Epoch lines of RUN/metrics.jsonl (lines with "epoch" and "loss"; step lines, which carry
/// "type": "step", are skipped). A torn last line (no newline: an interrupted run) is skipped
/// and a warning added to `notes`; a malformed complete line is an error naming the line.
inline MetricsTable read_metrics(const fs::path& path, std::vector<std::string>& notes) {
  MetricsTable t;
  const auto bytes = io::read_file(path, std::size_t{256} << 20);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const train::MetricsLogText log = train::split_metrics_log(text);
  if (!log.torn.empty()) notes.push_back(train::torn_line_warning(path, log.torn));
  std::size_t line_no = 0;
  std::vector<json> lines;
  for (const std::string_view line : log.lines) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail(path.string(), ":", line_no, ": not a JSON object: ", e.what());
    }
    SIEVE_CHECK(j.is_object(), path.string(), ":", line_no, ": not a JSON object");
    if (j.value("type", std::string("epoch")) != "epoch" || !j.contains("epoch") || !j.contains("loss")) continue;
    lines.push_back(std::move(j));
  }
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const json& j = lines[i];
    t.epoch.push_back(j["epoch"].is_number() ? j["epoch"].get<double>() : NAN);
    for (const auto& [k, v] : j.items()) {
      if (k == "epoch" || !v.is_number()) continue;
      auto& col = t.cols[k];
      col.resize(lines.size(), NAN);
      col[i] = v.get<double>();
    }
  }
  for (auto& [k, col] : t.cols) col.resize(lines.size(), NAN);
  return t;
}

inline std::string fmt(double v, const char* f = "%.4f") {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// `n` distinct indices of [0, total), sorted (sieve::sample_indices keyed by seed and stream);
/// all of them when n >= total.
inline std::vector<std::size_t> sample_indices(std::size_t total, std::size_t n, std::uint64_t seed,
                                               std::uint64_t stream) {
  Rng rng(derive_seed(seed, RngPurpose::split), stream);
  return sieve::sample_indices(total, n, rng);
}

/// Rows `idx` of x [N,D].
inline Tensor2f take_rows(const Tensor2f& x, const std::vector<std::size_t>& idx) {
  const std::size_t D = x.shape()[1];
  Tensor2f out(Shape<2>{idx.size(), D});
  for (std::size_t r = 0; r < idx.size(); ++r)
    std::copy_n(x.data() + idx[r] * D, D, out.data() + r * D);
  return out;
}

/// The UMAP of x (cosine, PCA to 50 first when wider), or nullopt with too few points.
inline std::optional<Tensor2f> layout(const Tensor2f& x, std::uint64_t seed) {
  if (x.shape()[0] < 4) return std::nullopt;
  viz::UmapOptions o;
  o.metric = viz::UmapMetric::cosine;
  o.n_neighbors = std::min<std::size_t>(15, x.shape()[0] - 1);
  o.pca_components = x.shape()[1] > 50 ? 50 : 0;
  o.seed = seed;
  return viz::umap(x, o);
}

/// Charts side by side in one <svg> (nested <svg> viewports, so each keeps its own
/// coordinates); the page stays one figure per row. Give a row's charts equal heights: the
/// page's CSS makes nested <svg> heights fill the row.
/// Requires: each item is one <svg ...> document with width and height attributes.
inline std::string svg_row(const std::vector<std::string>& svgs, double gap = 16) {
  const auto attr = [](const std::string& s, const char* name) {
    const std::string key = std::string(" ") + name + "=\"";
    const auto at = s.find(key);
    SIEVE_CHECK(at != std::string::npos && s.rfind("<svg", 0) == 0, "svg_row: item without a ", name, " attribute");
    return std::strtod(s.c_str() + at + key.size(), nullptr);
  };
  double W = 0, H = 0;
  std::string body;
  for (const auto& s : svgs) {
    const double w = attr(s, "width"), h = attr(s, "height");
    body += "<svg x=\"" + fmt(W, "%.0f") + "\" y=\"0\" " + s.substr(5);
    W += w + gap;
    H = std::max(H, h);
  }
  W = svgs.empty() ? 0 : W - gap;
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W, "%.0f") + "\" height=\"" + fmt(H, "%.0f") +
         "\" viewBox=\"0 0 " + fmt(W, "%.0f") + " " + fmt(H, "%.0f") + "\">\n" + body + "</svg>\n";
}

inline viz::ScatterPlot scatter(std::string title, const Tensor2f& xy, std::vector<std::int64_t> cls,
                                std::vector<std::string> names) {
  viz::ScatterPlot p;
  p.title = std::move(title);
  for (std::size_t i = 0; i < xy.shape()[0]; ++i) {
    p.x.push_back(xy(i, 0));
    p.y.push_back(xy(i, 1));
  }
  p.cls = std::move(cls);
  p.class_names = std::move(names);
  p.point_radius = xy.shape()[0] > 3000 ? 1.6 : 2.4;
  p.width = 536;
  p.height = 470;
  return p;
}

/// A strip of square thumbnails: `left` images, a gap with a grey rule, then `right` images;
/// empty slots stay background. Used for "predicted as c" beside "train samples of c".
inline Image thumbnail_strip(const std::vector<const Image*>& left, const std::vector<const Image*>& right,
                             std::size_t slots, std::size_t T) {
  const std::size_t pad = 3, gap = 24;
  const std::size_t W = 2 * slots * (T + pad) + gap + pad, H = T + 2 * pad;
  Image strip(H, W, 255);
  Image thumb;
  std::vector<float> tmp;
  const auto paste = [&](const Image* src, std::size_t x0) {
    if (!src) return;
    // Fit inside T x T keeping the aspect ratio, centred.
    const double s = static_cast<double>(T) / static_cast<double>(std::max(src->height, src->width));
    const std::size_t th = std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(src->height * s)));
    const std::size_t tw = std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(src->width * s)));
    augment::resize_image(*src, th, tw, true, thumb, tmp);
    const std::size_t oy = pad + (T - th) / 2, ox = x0 + (T - tw) / 2;
    for (std::size_t y = 0; y < th; ++y)
      std::copy_n(thumb.data() + y * tw * 3, tw * 3, strip.data() + ((oy + y) * W + ox) * 3);
  };
  for (std::size_t i = 0; i < slots; ++i) paste(i < left.size() ? left[i] : nullptr, pad + i * (T + pad));
  const std::size_t rule = pad + slots * (T + pad) + gap / 2;
  for (std::size_t y = 0; y < H; ++y)
    for (std::size_t c = 0; c < 3; ++c) strip.at(y, rule - 1, c) = strip.at(y, rule, c) = 150;
  for (std::size_t i = 0; i < slots; ++i)
    paste(i < right.size() ? right[i] : nullptr, pad + slots * (T + pad) + gap + i * (T + pad));
  return strip;
}

}  // namespace report_detail

struct ReportCommand {
  CLI::App* app = nullptr;
  std::string run_dir, data_dir, solution, predicted;
  std::size_t umap_points = 2000, grid_classes = 6, grid_images = 8, thumb = 64;
  std::uint64_t seed = 0;
  int threads = 0;
  bool no_umap = false;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("report", "Write RUN/report/index.html: training curves, threshold curves, most "
                                          "predicted classes, image grids, UMAP projections (offline page)");
    app->add_option("--run", run_dir, "run folder written by 'sieve train' (and 'sieve predict' for the test "
                                      "sections)")
        ->required();
    app->add_option("--predict", predicted, "submission written by 'sieve predict --out SUB.csv': the test sections "
                                            "read SUB.scores.safetensors, SUB.embeddings.safetensors and "
                                            "SUB.predict.json beside it (default: RUN/test_scores.safetensors... "
                                            "of runs predicted by older versions, if any)");
    app->add_option("--data", data_dir, "data folder for the image grids (default: the one in RUN/config.json)");
    app->add_option("--solution", solution, "answers CSV (id,label): adds the test score and per-class table");
    app->add_option("--umap-points", umap_points, "at most this many train points per UMAP plot (test points: "
                                                  "half as many)")
        ->check(CLI::Range(std::size_t{10}, std::size_t{20000}));
    app->add_flag("--no-umap", no_umap, "skip the UMAP projections (the slowest part)");
    app->add_option("--grid-classes", grid_classes, "image-grid rows: the most predicted labels")
        ->check(CLI::Range(std::size_t{1}, std::size_t{50}));
    app->add_option("--grid-images", grid_images, "images per side of each grid row")
        ->check(CLI::Range(std::size_t{1}, std::size_t{32}));
    app->add_option("--seed", seed, "seed for the random samples and UMAP");
    app->add_option("--threads", threads, "compute threads (0 = OMP_NUM_THREADS or all cores)")
        ->check(CLI::Range(0, 4096));
  }

  int run() {
    if (threads > 0) sieve::set_threads(threads);
    const fs::path run(run_dir);
    const RunConfig cfg = load_config(run);
    const std::size_t K = cfg.num_classes();
    const fs::path out_dir = run / "report";
    fs::create_directories(out_dir);
    std::vector<std::string> notes;  // what could not be drawn, and why

    viz::HtmlPage page("sieve report: " + run.filename().string());
    page.paragraph(str("Run folder ", fs::absolute(run).string(), "; data folder ", cfg.data, "; ", K,
                       " classes; model ", model_text(cfg), "; input ", cfg.image_size, "x", cfg.image_size, " (",
                       cfg.fit, "), augment ", cfg.augment, ", batch ", cfg.batch, ", lr ", cfg.lr, ", seed ",
                       cfg.seed, "."));

    std::optional<Calibration> cal;
    if (fs::exists(run / "calibration.json")) cal = load_calibration(run);
    // Older versions of predict wrote its files into the run folder; it now only reads it.
    const PredictFiles pf = predicted.empty() ? PredictFiles{run / "test_scores.safetensors",
                                                             run / "test_embeddings.safetensors", run / "predict.json"}
                                              : predict_files(predicted);
    if (!predicted.empty())
      SIEVE_CHECK(fs::exists(pf.scores), "report: --predict ", predicted, ": no ", pf.scores.string(),
                  " beside it (written by 'sieve predict --out ", predicted, "')");
    std::optional<TestScores> test;
    if (fs::exists(pf.scores)) test = read_test_scores(pf.scores);

    summary_section(page, cfg, cal, test);
    curves_section(page, run, notes);
    threshold_section(page, cal, notes);

    std::optional<io::DataFolder> folder;
    const std::string data = data_dir.empty() ? cfg.data : data_dir;
    if (!fs::is_directory(data)) {
      notes.push_back(str("data folder ", data, " not found: no image grids (pass --data DIR)"));
    } else {
      try {  // a broken data folder costs the image grids, not the whole page
        folder = io::open_data_folder(data, /*require_test*/ false);
      } catch (const Error& e) {
        notes.push_back(str("data folder ", data, " could not be read, so no image grids: ", e.what()));
      }
    }

    if (test) {
      std::string source;
      if (fs::exists(pf.decision)) {
        const json d = read_json_file(pf.decision);
        if (d.contains("threshold_source") && d["threshold_source"].is_string())
          source = d["threshold_source"].get<std::string>();
      }
      predictions_section(page, cfg, *test, source);
      if (!solution.empty()) score_section(page, cfg, *test);
      if (folder) grid_section(page, out_dir, cfg, *test, *folder);
    } else {
      notes.push_back("no test predictions: run 'sieve predict --run RUN --out SUB.csv ...', then 'sieve report "
                      "--predict SUB.csv', for the test sections");
      page.section("Test predictions").paragraph("Not available yet: run 'sieve predict' on this run first.");
    }
    if (!no_umap) umap_section(page, run, pf.embeddings, cfg, notes);

    if (!notes.empty()) {
      page.section("Notes");
      for (const auto& n : notes) page.paragraph(n);
    }
    page.write(out_dir / "index.html");
    for (const auto& n : notes) std::cerr << "report: " << n << "\n";
    std::cout << "report written to " << (out_dir / "index.html").string() << "\n";
    return 0;
  }

 private:
  static std::string model_text(const RunConfig& cfg) {
    std::string b;
    for (std::size_t i = 0; i < cfg.blocks.size(); ++i) b += (i ? "," : "") + std::to_string(cfg.blocks[i]);
    return str(cfg.arch == "resnet50" ? "ResNet50" : "ResNet", " (blocks ", b, ", width ", cfg.width,
               ") + dropout ", cfg.dropout, " + linear head");
  }

  void summary_section(viz::HtmlPage& page, const RunConfig& cfg, const std::optional<Calibration>& cal,
                       const std::optional<TestScores>& test) const {
    using report_detail::fmt;
    if (!cal) return;
    page.section("Validation calibration");
    page.paragraph(str("Chosen on ", cal->n_val, " validation images (", cal->n_val_outside,
                       " of them outside/distractor images) with the '", cal->checkpoint,
                       "' weights. Recommended method: ", cal->recommended, "."));
    std::vector<std::vector<std::string>> rows;
    for (const auto& name : method_names()) {
      const auto it = cal->methods.find(name);
      if (it == cal->methods.end()) continue;
      const auto& m = it->second;
      std::string used = test && test->method == name ? "yes (t=" + fmt(test->threshold, "%.4g") + ")" : "";
      rows.push_back({name, fmt(m.val_map5), fmt(m.threshold, "%.4g"), m.weight ? fmt(*m.weight, "%.2f") : "-", used});
    }
    page.table(std::vector<std::string>{"method", "validation MAP@5", "threshold for -1", "head weight (fusion)",
                                        "used by predict"},
               rows);
    (void)cfg;
  }

  static constexpr double kHalf = 536, kChartH = 340;

  static void curves_section(viz::HtmlPage& page, const fs::path& run, std::vector<std::string>& notes) {
    const fs::path path = run / "metrics.jsonl";
    page.section("Training curves");
    if (!fs::exists(path)) {
      notes.push_back("no RUN/metrics.jsonl: no training curves");
      page.paragraph("No metrics.jsonl in the run folder.");
      return;
    }
    const auto t = report_detail::read_metrics(path, notes);
    if (t.epoch.empty()) {
      page.paragraph("metrics.jsonl holds no epoch line yet.");
      return;
    }
    const auto series = [&](const std::string& key, const std::string& name, const std::string& color) {
      viz::Series s;
      s.name = name;
      s.x = t.epoch;
      s.y = t.cols.at(key);
      s.color = color;
      s.markers = t.epoch.size() <= 40;
      return s;
    };
    const auto chart = [&](std::string title, std::string y_label) {
      viz::LineChart c;
      c.title = std::move(title);
      c.x_label = "epoch";
      c.integer_x = true;
      c.y_label = std::move(y_label);
      c.width = kHalf;
      c.height = kChartH;
      return c;
    };
    auto loss = chart("Loss", "BCE-with-logits loss");
    if (t.cols.count("loss")) loss.series.push_back(series("loss", "train", "#1f77b4"));
    if (t.cols.count("val_loss")) loss.series.push_back(series("val_loss", "val", "#ff7f0e"));

    auto map = chart("Validation MAP@5", "MAP@5");
    std::size_t k = 0;
    std::optional<std::size_t> best;
    for (const auto& [key, col] : t.cols) {
      if (key.rfind("val_", 0) != 0 || key.find("map") == std::string::npos) continue;
      map.series.push_back(series(key, key.substr(4), viz::palette_color(k++)));
      if (key == "val_map5")
        for (std::size_t i = 0; i < col.size(); ++i)
          if (std::isfinite(col[i]) && (!best || col[i] > col[*best])) best = i;
    }
    if (best) {
      const double v = t.cols.at("val_map5")[*best];
      map.markers.push_back({t.epoch[*best], v, "best " + report_detail::fmt(v) + " (epoch " +
                                                    report_detail::fmt(t.epoch[*best], "%.0f") + ")"});
    }
    std::vector<std::string> row1{viz::line_chart(loss)};
    if (!map.series.empty()) row1.push_back(viz::line_chart(map));
    page.svg(report_detail::svg_row(row1));

    std::vector<std::string> row2;
    if (t.cols.count("lr")) {
      auto lr = chart("Learning rate (end of epoch)", "lr");
      lr.log_y = true;
      lr.series.push_back(series("lr", "lr", "#2ca02c"));
      row2.push_back(viz::line_chart(lr));
    }
    // Other per-epoch validation numbers the trainer logs (top-1, the swept threshold, ...).
    auto other = chart("Other validation metrics", "value");
    for (const auto& [key, col] : t.cols)
      if (key.rfind("val_", 0) == 0 && key.find("map") == std::string::npos && key != "val_loss")
        other.series.push_back(series(key, key.substr(4), viz::palette_color(3 + other.series.size())));
    if (!other.series.empty()) row2.push_back(viz::line_chart(other));
    if (!row2.empty()) page.svg(report_detail::svg_row(row2));

    std::string extra;
    if (t.cols.count("images_per_sec")) {
      double ips = 0;
      std::size_t n = 0;
      for (double v : t.cols.at("images_per_sec"))
        if (std::isfinite(v)) ips += v, ++n;
      if (n) extra = str(" Mean training throughput ", static_cast<long long>(ips / static_cast<double>(n)), " images/s.");
    }
    if (t.cols.count("wall_time_s")) {
      const auto& w = t.cols.at("wall_time_s");
      if (!w.empty() && std::isfinite(w.back())) extra += " Wall time " + report_detail::fmt(w.back(), "%.0f") + " s.";
    }
    page.paragraph(str(t.epoch.size(), " epoch(s) logged.", extra));
  }

  static void threshold_section(viz::HtmlPage& page, const std::optional<Calibration>& cal,
                                std::vector<std::string>& notes) {
    page.section("Open-set threshold: validation MAP@5 versus the threshold for -1");
    if (!cal) {
      notes.push_back("no RUN/calibration.json (written when training ends): no threshold curves");
      page.paragraph("No calibration.json yet (training writes it when it ends).");
      return;
    }
    page.paragraph("Each ranked list gets -1 inserted as if -1 scored the threshold t: classes scoring below t move "
                   "after it. The threshold maximising validation MAP@5 (the first maximum) is marked; predict uses it.");
    std::vector<std::string> charts;
    for (const auto& name : method_names()) {
      const auto it = cal->methods.find(name);
      if (it == cal->methods.end() || it->second.sweep.empty()) continue;
      const auto& m = it->second;
      viz::LineChart c;
      c.title = name == "head"       ? "head: sigmoid probabilities"
                : name == "knn"      ? "kNN: max cosine to a class"
                : name == "centroid" ? "centroid: cosine to class mean"
                                     : "fusion: w head + (1-w) kNN, w=" + report_detail::fmt(*m.weight, "%.1f");
      c.x_label = "threshold t";
      c.y_label = "validation MAP@5";
      c.width = kHalf;
      c.height = kChartH;
      viz::Series s{"MAP@5", {}, {}, "#1f77b4", false, false};
      for (const auto& p : m.sweep) s.x.push_back(p[0]), s.y.push_back(p[1]);
      c.series.push_back(std::move(s));
      c.markers.push_back({m.threshold, m.val_map5,
                           "t=" + report_detail::fmt(m.threshold, "%.3g") + ", " + report_detail::fmt(m.val_map5)});
      charts.push_back(viz::line_chart(c));
      if (!m.weight_sweep.empty()) {
        viz::LineChart w;
        w.title = "fusion: best MAP@5 per head weight w";
        w.x_label = "w (head weight; kNN gets 1 - w)";
        w.y_label = "validation MAP@5";
        w.width = kHalf;
        w.height = kChartH;
        viz::Series ws{"MAP@5", {}, {}, "#9467bd", false, true};
        for (const auto& p : m.weight_sweep) ws.x.push_back(p[0]), ws.y.push_back(p[1]);
        w.series.push_back(std::move(ws));
        w.markers.push_back({*m.weight, m.val_map5, "w=" + report_detail::fmt(*m.weight, "%.2f")});
        charts.push_back(viz::line_chart(w));
      }
    }
    for (std::size_t i = 0; i < charts.size(); i += 2)
      page.svg(report_detail::svg_row(i + 1 < charts.size() ? std::vector<std::string>{charts[i], charts[i + 1]}
                                                            : std::vector<std::string>{charts[i]}));
  }

  static std::string label_text(const RunConfig& cfg, std::int64_t c) {
    return c < 0 ? std::string("-1 (distractor)") : cfg.classes[static_cast<std::size_t>(c)];
  }

  /// First-prediction counts per label id (-1 included), most frequent first.
  static std::vector<std::pair<std::int64_t, std::size_t>> first_counts(const TestScores& t) {
    std::map<std::int64_t, std::size_t> n;
    for (std::size_t i = 0; i < t.ranked.shape()[0]; ++i) ++n[t.ranked(i, 0)];
    std::vector<std::pair<std::int64_t, std::size_t>> v(n.begin(), n.end());
    std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    return v;
  }

  static void predictions_section(viz::HtmlPage& page, const RunConfig& cfg, const TestScores& t,
                                  const std::string& threshold_source) {
    page.section("Test predictions: the 20 most predicted labels");
    const auto counts = first_counts(t);
    viz::BarChart b;
    b.title = "Most frequent first predictions on the test set";
    b.value_label = "test images";
    for (std::size_t i = 0; i < counts.size() && i < 20; ++i) {
      b.labels.push_back(label_text(cfg, counts[i].first));
      b.values.push_back(static_cast<double>(counts[i].second));
    }
    page.svg(viz::bar_chart(b));
    std::size_t minus1 = 0;
    for (const auto& [c, n] : counts) minus1 += c < 0 ? n : 0;
    page.paragraph(str(t.ids.size(), " test images ranked by '", t.method, "' (threshold ",
                       report_detail::fmt(t.threshold, "%.4g"),
                       threshold_source.empty() ? "" : " from " + threshold_source, ", TTA ", t.tta, "); ", minus1, " (",
                       report_detail::fmt(100.0 * static_cast<double>(minus1) / static_cast<double>(t.ids.size()),
                                          "%.1f"),
                       "%) have -1 first. ", counts.size(), " distinct first predictions."));
  }

  void score_section(viz::HtmlPage& page, const RunConfig& cfg, const TestScores& t) const {
    using report_detail::fmt;
    const auto sol = io::read_solution(solution);
    std::unordered_map<std::string, std::string> truth_of;
    for (const auto& r : sol) truth_of.emplace(r.id, r.label);
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> truth;
    const auto labels = retrieval::ranked_label_strings(t.ranked, cfg.classes);
    for (std::size_t i = 0; i < t.ids.size(); ++i) {
      const auto it = truth_of.find(t.ids[i]);
      SIEVE_CHECK(it != truth_of.end(), solution, ": no row for test id '", t.ids[i], "'");
      rows.push_back(labels[i]);
      truth.push_back(it->second);
    }
    const auto s = metrics::score_summary(rows, truth, "-1", 5);
    // The class with the highest score, -1 ignored: the classifier's own accuracy (for the head,
    // the reference solution's "known-class top-1"), apart from where the threshold puts -1.
    const std::size_t K = t.scores.shape()[1];
    std::size_t argmax_hits = 0;
    for (std::size_t i = 0; i < t.ids.size(); ++i) {
      if (truth[i] == "-1" || K == 0) continue;
      const float* row = t.scores.data() + i * K;
      const auto best = static_cast<std::size_t>(std::max_element(row, row + K) - row);
      argmax_hits += cfg.classes[best] == truth[i];
    }
    const std::string argmax_top1 =
        s.n_known ? fmt(static_cast<double>(argmax_hits) / static_cast<double>(s.n_known)) : "-";
    page.section("Test score (against " + fs::path(solution).filename().string() + ")");
    page.table(std::vector<std::string>{"MAP@5", "known-class top-1 (first label)", "known-class top-1 (score argmax)",
                                        "distractor recall", "items"},
               std::vector<std::vector<std::string>>{{fmt(s.map), fmt(s.known_top1), argmax_top1,
                                                      fmt(s.distractor_recall),
                                                      str(s.n, " (", s.n_known, " known, ", s.n_distractor,
                                                          " distractors)")}});
    page.paragraph("First label: the submission's first label is the true class (a -1 ranked first is a miss). "
                   "Score argmax: the class with the highest " + t.method + " score, whatever the threshold.");
    std::vector<std::vector<std::string>> per;
    for (const auto& c : s.per_class)
      per.push_back({c.label, std::to_string(c.n_true), std::to_string(c.n_first), std::to_string(c.n_correct),
                     c.n_true ? fmt(c.map()) : "-"});
    page.table(std::vector<std::string>{"true label", "test images", "predicted first", "correct first", "MAP@5"}, per);
  }

  void grid_section(viz::HtmlPage& page, const fs::path& out_dir, const RunConfig& cfg, const TestScores& t,
                    const io::DataFolder& folder) const {
    page.section("Test images predicted as the top labels, beside training images of those labels");
    page.paragraph(str("Each row: left, the ", grid_images, " test images ranked first as that label with the highest "
                       "scores; right of the grey rule, ", grid_images, " training images of the label (for -1: ",
                       "outside images, the distractor examples)."));
    std::unordered_map<std::string, fs::path> test_path;
    for (const auto& s : folder.test) test_path.emplace(s.id, s.path);
    // Train samples per run class id (matched by label text: the folder may order classes differently).
    std::vector<std::vector<fs::path>> train_paths(cfg.num_classes());
    for (const auto& s : folder.train) {
      if (s.labels.empty() || s.labels[0] < 0) continue;
      const auto& text = folder.classes[static_cast<std::size_t>(s.labels[0])];
      const auto it = std::find(cfg.classes.begin(), cfg.classes.end(), text);
      if (it != cfg.classes.end()) train_paths[static_cast<std::size_t>(it - cfg.classes.begin())].push_back(s.path);
    }
    std::vector<fs::path> outside_paths;
    for (const auto& s : folder.outside) outside_paths.push_back(s.path);

    const auto counts = first_counts(t);
    std::vector<std::string> unreadable;  // images skipped (named), listed under the grids
    const std::size_t K = t.scores.shape()[1];
    std::size_t rows_done = 0;
    for (std::size_t r = 0; r < counts.size() && rows_done < grid_classes; ++r) {
      const std::int64_t c = counts[r].first;
      // Most confident first: by the class score (for -1, the lowest best-class score).
      std::vector<std::pair<double, std::size_t>> cand;
      for (std::size_t i = 0; i < t.ranked.shape()[0]; ++i) {
        if (t.ranked(i, 0) != c) continue;
        const float* row = t.scores.data() + i * K;
        const double key = c >= 0 ? row[c] : -static_cast<double>(*std::max_element(row, row + K));
        cand.push_back({key, i});
      }
      std::stable_sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      std::vector<Image> left, right;
      for (std::size_t j = 0; j < cand.size() && left.size() < grid_images; ++j) {
        const auto it = test_path.find(t.ids[cand[j].second]);
        if (it == test_path.end()) continue;
        try {
          left.push_back(io::read_image(it->second));
        } catch (const Error& e) {
          unreadable.push_back(e.what());
        }
      }
      const auto& pool = c >= 0 ? train_paths[static_cast<std::size_t>(c)] : outside_paths;
      for (std::size_t j : report_detail::sample_indices(pool.size(), grid_images, seed, 100 + static_cast<std::uint64_t>(c + 1)))
        try {
          right.push_back(io::read_image(pool[j]));
        } catch (const Error& e) {
          unreadable.push_back(e.what());
        }
      if (left.empty()) continue;
      std::vector<const Image*> lp, rp;
      for (const auto& im : left) lp.push_back(&im);
      for (const auto& im : right) rp.push_back(&im);
      const std::string name = str("grid_", rows_done, ".png");
      io::write_png(out_dir / name, report_detail::thumbnail_strip(lp, rp, grid_images, thumb));
      page.image(name, "test images predicted " + label_text(cfg, c) + " beside train images",
                 str(label_text(cfg, c), ": ", counts[r].second, " test images predicted first; ", pool.size(),
                     c >= 0 ? " training images" : " outside images"));
      ++rows_done;
    }
    if (rows_done == 0) page.paragraph("No test image of the predictions was found in the data folder.");
    for (std::size_t i = 0; i < unreadable.size() && i < 10; ++i) page.paragraph("skipped: " + unreadable[i]);
    if (unreadable.size() > 10) page.paragraph(str("... and ", unreadable.size() - 10, " more unreadable images"));
  }

  void umap_section(viz::HtmlPage& page, const fs::path& run, const fs::path& test_file, const RunConfig& cfg,
                    std::vector<std::string>& notes) const {
    page.section("Embeddings: UMAP projections computed by sieve");
    const fs::path train_file = run / "train_embeddings.safetensors";
    if (!fs::exists(train_file)) {
      notes.push_back("no RUN/train_embeddings.safetensors (written when training ends): no UMAP plots");
      page.paragraph("No train_embeddings.safetensors in the run folder.");
      return;
    }
    const auto db = read_embeddings(train_file);
    const std::size_t K = cfg.num_classes();
    std::vector<std::size_t> labelled;
    for (std::size_t i = 0; i < db.label.size(); ++i)
      if (db.label[i] >= 0 && db.label[i] < static_cast<std::int64_t>(K)) labelled.push_back(i);
    page.paragraph(str("Cosine UMAP (n_neighbors 15, min_dist 0.1; PCA to 50 dimensions first) of the pooled "
                       "embeddings; at most ", umap_points, " train points per plot, drawn at random with seed ",
                       seed, "."));
    std::vector<std::string> plots;
    const auto emit = [&] {
      for (std::size_t i = 0; i < plots.size(); i += 2)
        page.svg(report_detail::svg_row(i + 1 < plots.size() ? std::vector<std::string>{plots[i], plots[i + 1]}
                                                             : std::vector<std::string>{plots[i]}));
    };
    {
      std::cerr << "report: UMAP of the train embeddings\n";
      auto pick = report_detail::sample_indices(labelled.size(), umap_points, seed, 1);
      for (auto& p : pick) p = labelled[p];
      const Tensor2f x = report_detail::take_rows(db.embedding, pick);
      if (const auto xy = report_detail::layout(x, seed)) {
        std::vector<std::int64_t> cls;
        for (auto p : pick) cls.push_back(db.label[p]);
        plots.push_back(viz::scatter_plot(
            report_detail::scatter(str("Train by class (", pick.size(), " points)"), *xy, cls, cfg.classes)));
      }
    }
    if (K > 20) {
      std::cerr << "report: UMAP of 20 random classes\n";
      const auto chosen = report_detail::sample_indices(K, 20, seed, 2);
      std::vector<std::int64_t> remap(K, -2);
      std::vector<std::string> names;
      for (std::size_t j = 0; j < chosen.size(); ++j) {
        remap[chosen[j]] = static_cast<std::int64_t>(j);
        names.push_back(cfg.classes[chosen[j]]);
      }
      std::vector<std::size_t> in;
      for (auto i : labelled)
        if (remap[static_cast<std::size_t>(db.label[i])] >= 0) in.push_back(i);
      auto pick = report_detail::sample_indices(in.size(), umap_points, seed, 3);
      for (auto& p : pick) p = in[p];
      if (const auto xy = report_detail::layout(report_detail::take_rows(db.embedding, pick), seed)) {
        std::vector<std::int64_t> cls;
        for (auto p : pick) cls.push_back(remap[static_cast<std::size_t>(db.label[p])]);
        plots.push_back(viz::scatter_plot(report_detail::scatter("20 random classes (train)", *xy, cls, names)));
      }
    } else {
      page.paragraph(str("20 random classes: the run has ", K, " classes, so the train plot shows them all."));
    }
    if (!fs::exists(test_file)) {
      emit();
      page.paragraph("Train with test: no test embeddings (written by 'sieve predict'; pass --predict SUB.csv).");
      return;
    }
    std::cerr << "report: UMAP of train with test\n";
    const auto te = read_embeddings(test_file);
    SIEVE_CHECK(te.embedding.shape()[1] == db.embedding.shape()[1], test_file.string(), ": embeddings have D=",
                te.embedding.shape()[1], " but the train embeddings have D=", db.embedding.shape()[1]);
    auto pick = report_detail::sample_indices(labelled.size(), umap_points, seed, 4);
    for (auto& p : pick) p = labelled[p];
    const auto tpick = report_detail::sample_indices(te.embedding.shape()[0], std::max<std::size_t>(umap_points / 2, 1),
                                                     seed, 5);
    const std::size_t D = db.embedding.shape()[1];
    Tensor2f x(Shape<2>{pick.size() + tpick.size(), D});
    std::vector<std::int64_t> cls;
    for (std::size_t r = 0; r < pick.size(); ++r) {
      std::copy_n(db.embedding.data() + pick[r] * D, D, x.data() + r * D);
      cls.push_back(db.label[pick[r]]);
    }
    // Test points grey and drawn first: where no train colour covers them, the test images
    // lie away from every known class (distractors, or a domain shift).
    for (std::size_t r = 0; r < tpick.size(); ++r) {
      std::copy_n(te.embedding.data() + tpick[r] * D, D, x.data() + (pick.size() + r) * D);
      cls.push_back(-1);
    }
    if (const auto xy = report_detail::layout(x, seed))
      plots.push_back(viz::scatter_plot(report_detail::scatter(
          str("Train (", pick.size(), ", by class) with test (", tpick.size(), ", grey)"), *xy, cls, cfg.classes)));
    emit();
  }
};

}  // namespace sieve::cli
