#pragma once
/// `sieve predict --run RUN --data DIR --out submission.csv`: score the test images with the
/// run's best weights, rank the classes by the chosen method (head, knn, centroid, fusion),
/// insert -1 at the threshold chosen on validation (or one giving a target unknown rate, or a
/// given one), write the submission atomically, re-read and validate it against the test ids.
/// The run folder is only read (a shared, read-only model works). For the report it also
/// stores, beside the submission SUB.csv: SUB.scores.safetensors (scores and ranking),
/// SUB.embeddings.safetensors (L2-normalised) and SUB.predict.json (what was decided and why).
/// --out is checked to be writable before any image is embedded.
/// Under `mpirun -np N` each rank embeds a block of the test images; rank 0 gathers, ranks and writes.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common.hpp"
#include "flags.hpp"
#include "parallel.hpp"
#include "run.hpp"
#include "sieve/io/data_folder.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/file.hpp"
#include "sieve/io/safetensors.hpp"
#include "sieve/io/submission.hpp"
#include "sieve/kernels/gemm.hpp"
#include "sieve/retrieval/scores.hpp"
#include "sieve/retrieval/threshold.hpp"

namespace sieve::cli {

/// What `sieve predict --out SUB.csv` writes beside the submission for `sieve report --predict`.
struct PredictFiles {
  fs::path scores;      ///< SUB.scores.safetensors: TestScores
  fs::path embeddings;  ///< SUB.embeddings.safetensors: the test embeddings (L2-normalised)
  fs::path decision;    ///< SUB.predict.json: method, threshold and where it came from
};
inline PredictFiles predict_files(const fs::path& submission) {
  const std::string base = (submission.parent_path() / submission.stem()).string();
  return {base + ".scores.safetensors", base + ".embeddings.safetensors", base + ".predict.json"};
}

/// SUB.scores.safetensors (written by `sieve predict`): the ranking behind a submission.
/// `scores` [N,K] F32 (the chosen method's class scores), `ranked` [N,W] I64 (class ids best
/// first, -1 = distractor), metadata: ids (JSON array, row order), method, threshold, tta.
struct TestScores {
  Tensor2f scores;
  Tensor2<std::int64_t> ranked;
  std::vector<std::string> ids;
  std::string method;
  double threshold = 0.0;
  std::string tta = "none";
};

/// Write SUB.scores.safetensors. Requires: scores, ranked and ids with the same N.
inline void write_test_scores(const fs::path& path, const TestScores& t) {
  const std::size_t N = t.scores.shape()[0];
  SIEVE_CHECK(t.ranked.shape()[0] == N && t.ids.size() == N, "write_test_scores(", path.string(), "): ", N,
              " score rows, ", t.ranked.shape()[0], " ranked rows, ", t.ids.size(), " ids");
  io::SafeTensorsWriter w;
  add_tensor(w, "scores", t.scores);
  w.add("ranked", {N, t.ranked.shape()[1]}, std::span<const std::int64_t>(t.ranked.data(), t.ranked.size()));
  w.set_metadata("ids", json(t.ids).dump());
  w.set_metadata("method", t.method);
  w.set_metadata("tta", t.tta);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", t.threshold);  // round-trips the double exactly
  w.set_metadata("threshold", buf);
  w.write(path);
}

/// Read SUB.scores.safetensors.
/// Requires: a file written by write_test_scores. Ensures: consistent shapes and ranked ids in
/// [-1, K), or an error naming the file and the inconsistency.
inline TestScores read_test_scores(const fs::path& path) {
  SIEVE_CHECK(fs::exists(path), path.string(), ": no such file (run 'sieve predict' first)");
  const auto st = io::SafeTensors::load(path);
  TestScores t;
  t.scores = read_tensor<float, 2>(st, "scores");
  SIEVE_CHECK(st.contains("ranked"), path.string(), ": no tensor 'ranked'");
  const auto& ri = st.info("ranked");
  SIEVE_CHECK(ri.dtype == io::DType::I64 && ri.shape.size() == 2 && ri.shape[0] == t.scores.shape()[0], path.string(),
              ": 'ranked' must be I64 [N, W] with N=", t.scores.shape()[0], ", got ", io::dtype_name(ri.dtype), " ",
              io::shape_text(ri.shape));
  t.ranked = Tensor2<std::int64_t>(Shape<2>{ri.shape[0], ri.shape[1]});
  const auto r = st.ints("ranked");
  std::copy(r.begin(), r.end(), t.ranked.data());
  const auto K = static_cast<std::int64_t>(t.scores.shape()[1]);
  for (std::size_t i = 0; i < t.ranked.size(); ++i)
    SIEVE_CHECK(t.ranked.data()[i] >= -1 && t.ranked.data()[i] < K, path.string(), ": ranked value ",
                t.ranked.data()[i], " outside [-1, ", K, ")");
  const auto& md = st.metadata();
  const auto get = [&](const char* key) -> std::string {
    const auto it = md.find(key);
    SIEVE_CHECK(it != md.end(), path.string(), ": no '", key, "' in __metadata__");
    return it->second;
  };
  try {
    t.ids = json::parse(get("ids")).get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    fail(path.string(), ": __metadata__ 'ids' is not a JSON array of strings: ", e.what());
  }
  SIEVE_CHECK(t.ids.size() == t.scores.shape()[0], path.string(), ": ", t.ids.size(), " ids for ",
              t.scores.shape()[0], " rows");
  t.method = get("method");
  t.tta = md.count("tta") ? md.at("tta") : "none";
  const std::string thr = get("threshold");
  char* end = nullptr;
  t.threshold = std::strtod(thr.c_str(), &end);
  SIEVE_CHECK(end && *end == '\0' && !thr.empty(), path.string(), ": __metadata__ 'threshold' is '", thr,
              "', not a number");
  return t;
}

struct PredictCommand {
  CLI::App* app = nullptr;
  std::string run_dir, data_dir, out, method = "auto", tta = "run";
  std::optional<double> unknown_rate, threshold;
  std::string distractor_share;  ///< "", "estimate" or a number in [0, 1]
  std::size_t workers = 2, batch = 64;
  int threads = 0;
  bool quiet = false;

  void add_to(CLI::App& parent) {
    app = parent.add_subcommand("predict", "Rank the test images of a data folder with a trained run and write a "
                                           "submission (id,predictions; -1 inserted at the calibrated threshold)");
    app->add_option("--run", run_dir, "run folder written by 'sieve train'")->required();
    app->add_option("--data", data_dir, "data folder with test/ (and sample_submission.csv for the id order)")
        ->required();
    app->add_option("--out", out, "submission CSV to write (atomically; re-read and validated); beside it, for "
                                  "'sieve report --predict': SUB.scores.safetensors, SUB.embeddings.safetensors, "
                                  "SUB.predict.json")
        ->required();
    app->add_option("--method", method, "ranking: head (sigmoid of the head), knn (max cosine to a class's train "
                                        "embeddings), centroid (cosine to class means), fusion (head/kNN blend with "
                                        "the validation-tuned weight), auto (best on validation)")
        ->check(CLI::IsMember({"head", "knn", "centroid", "fusion", "auto"}))
        ->capture_default_str();
    app->add_option("--tta", tta, "test-time augmentation: " + tta_help +
                                      "; or run (what the run was calibrated with, RUN/config.json's tta)")
        ->check(CLI::IsMember({"none", "flip", "flip-translate", "run"}))
        ->capture_default_str();
    auto* ur = app->add_option("--unknown-rate", unknown_rate, "choose the threshold so that this fraction of test "
                                                               "images gets -1 first (instead of the validation one)")
                   ->check(finite_number & CLI::Range(0.0, 1.0));
    auto* th = app->add_option("--threshold", threshold, "use this threshold for -1 (instead of the validation one)")
                   ->excludes(ur)
                   ->check(finite_number);
    app->add_option("--distractor-share", distractor_share,
                    "S in [0, 1]: choose the validation threshold for a test holding this share of distractors "
                    "(validation MAP@5 reweighted); estimate: estimate the share from the test's own scores first "
                    "(black-box shift estimation; sound when the test's distractors resemble outside/, too low "
                    "when they are of kinds never seen)")
        ->excludes(ur)
        ->excludes(th)
        ->check(share_or({"estimate"}));
    app->add_option("--workers", workers, "image decoding threads")->check(CLI::Range(std::size_t{0}, std::size_t{64}));
    app->add_option("--batch", batch, "inference batch size")->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
    app->add_option("--threads", threads, "compute threads (0 = OMP_NUM_THREADS or all cores)")
        ->check(CLI::Range(0, 4096));
    app->add_flag("--quiet", quiet, "no progress lines");
  }

  int run() {
    if (threads > 0) sieve::set_threads(threads);
    dist::Communicator& comm = communicator();
    if (comm.rank() != 0) quiet = true;
    const fs::path run(run_dir);
    const PredictFiles files = predict_files(out);
    // Where the results go is checked before any image is embedded (rank 0 writes them).
    if (comm.rank() == 0) io::check_can_write(out, "predict: --out");
    const RunConfig cfg = load_config(run);
    const std::size_t K = cfg.num_classes();
    if (tta == "run") tta = cfg.tta;
    std::optional<Calibration> cal;
    if (fs::exists(run / "calibration.json")) cal = load_calibration(run);
    if (method == "auto") method = cal ? cal->recommended : "head";  // no calibration: the head (checked below)
    const Method m = parse_method(method);
    std::optional<double> share;
    if (!distractor_share.empty() && distractor_share != "estimate")
      share = std::strtod(distractor_share.c_str(), nullptr);  // checked by the option (share_or)
    // Fail on missing inputs before the slow part.
    if (!distractor_share.empty()) {
      SIEVE_CHECK(cal, (run / "calibration.json").string(),
                  ": missing (training writes it when it ends), so there is no validation curve for "
                  "--distractor-share");
      const auto& mc = cal->at(method, run / "calibration.json");
      SIEVE_CHECK(!mc.map5_known.empty(), (run / "calibration.json").string(), ": method '", method,
                  "' has no per-group validation curves (calibrated by an older sieve); "
                  "recalibrate with 'sieve train --resume ", run.string(), "' to use --distractor-share");
      SIEVE_CHECK(share || retrieval::share_estimate_index(mc), (run / "calibration.json").string(), ": method '",
                  method, "': at no threshold did validation's outside images get -1 first more often than its "
                  "known images, so --distractor-share estimate has nothing to go on; give a share instead");
    }
    SIEVE_CHECK(cal || (threshold && m != Method::fusion) || (unknown_rate && m != Method::fusion),
                (run / "calibration.json").string(), ": missing (training writes it when it ends), so there is no ",
                m == Method::fusion ? "fusion weight" : "validation threshold",
                m == Method::fusion ? "" : "; pass --threshold T or --unknown-rate R");
    const fs::path db_path = run / "train_embeddings.safetensors";
    std::optional<EmbeddingsFile> db;
    if (m != Method::head) {
      db = read_embeddings(db_path);
      SIEVE_CHECK(db->embedding.shape()[0] > 0, db_path.string(), ": no train embeddings");
    }
    const io::DataFolder folder = io::open_data_folder(data_dir, /*require_test*/ true);
    SIEVE_CHECK(!folder.test.empty(), data_dir, ": test/ holds no image to predict");

    Model model = load_model_parallel(comm, run, cfg);
    if (db)
      SIEVE_CHECK(db->embedding.shape()[1] == model.embedding_dim(), db_path.string(), ": embeddings have D=",
                  db->embedding.shape()[1], " but the model's are D=", model.embedding_dim());
    const io::FileDataset ds(folder.test);
    const Embedded q = embed_sharded(comm, model, ds, cfg, workers, tta, "predict", batch, quiet);
    if (comm.rank() != 0) return 0;  // rank 0 scores, writes and prints

    double weight = 0.5;
    if (m == Method::fusion) {
      const auto& mc = cal->at("fusion", run / "calibration.json");
      SIEVE_CHECK(mc.weight.has_value(), (run / "calibration.json").string(), ": method 'fusion' has no 'weight'");
      weight = *mc.weight;
    }
    const EmbeddingsFile none;
    const EmbeddingsFile& gallery = db ? *db : none;
    const Tensor2f scores =
        retrieval::method_scores(m, q, {gallery.embedding, gallery.label}, K, cfg.head_kind(), weight);

    // The threshold and where it came from (stored in SUB.predict.json).
    json decision;
    double t = 0.0;
    if (threshold) {
      t = *threshold;
      decision["threshold_source"] = "--threshold";
    } else if (unknown_rate) {
      const auto u = retrieval::threshold_for_unknown_rate(scores, *unknown_rate);
      t = u.threshold;
      decision["threshold_source"] = "--unknown-rate";
      decision["unknown_rate_target"] = *unknown_rate;
      decision["unknown_rate_achieved"] = u.achieved_rate;
    } else if (!distractor_share.empty()) {
      const auto& mc = cal->at(method, run / "calibration.json");
      const retrieval::ShareThreshold st =
          share ? retrieval::threshold_for_share(mc, *share) : retrieval::threshold_for_estimated_share(mc, scores);
      t = st.threshold;
      decision["threshold_source"] = share ? "validation at --distractor-share" : "validation at the estimated share";
      decision["distractor_share"] = st.share;
      decision["val_map5"] = st.val_map5;
      if (!share) decision["share_estimated_at"] = st.estimated_at, decision["share_test_first"] = st.test_first;
    } else {
      const auto& mc = cal->at(method, run / "calibration.json");
      t = mc.threshold;
      decision["threshold_source"] = "validation";
      decision["val_map5"] = mc.val_map5;
    }
    const Tensor2<std::int64_t> ranked = retrieval::rank_with_threshold(scores, t, 5);
    const auto labels = retrieval::ranked_label_strings(ranked, cfg.classes);

    std::vector<io::SubmissionRow> rows(q.ids.size());
    std::vector<std::string> ids(q.ids.size());
    std::size_t minus1_first = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      rows[i] = {q.ids[i], labels[i]};
      ids[i] = q.ids[i];
      minus1_first += ranked(i, 0) == metrics::kDistractor;
    }
    const std::string text = io::format_submission(rows);
    io::write_file_atomic(out, std::string_view(text));
    // Re-read what is on disk: one row per test id in order, at most 5 distinct labels each.
    const auto back = io::read_submission(out, std::span<const std::string>(ids));
    SIEVE_CHECK(back.size() == rows.size(), out, ": re-read ", back.size(), " rows but ", rows.size(), " were written");
    for (std::size_t i = 0; i < back.size(); ++i)
      SIEVE_CHECK(back[i].id == rows[i].id && back[i].labels == rows[i].labels, out, ": row ", i + 2,
                  " reads back differently from what was written (id '", back[i].id, "')");

    // For the report: scores, ranking, embeddings and the decision, beside the submission.
    TestScores ts;
    ts.scores = scores;
    ts.ranked = ranked;
    ts.ids = ids;
    ts.method = method;
    ts.threshold = t;
    ts.tta = tta;
    write_test_scores(files.scores, ts);
    EmbeddingsFile te;
    te.embedding = q.embeddings;
    retrieval::l2_normalize_rows(te.embedding);
    te.label.assign(ids.size(), -1);
    te.ids = ids;
    write_embeddings(files.embeddings, te,
                     {{"producer", "sieve predict"}, {"normalised", "yes"}, {"tta", tta}});
    decision["method"] = method;
    decision["threshold"] = t;
    decision["tta"] = tta;
    if (m == Method::fusion) decision["fusion_weight"] = weight;
    decision["data"] = fs::absolute(data_dir).string();
    decision["submission"] = fs::absolute(out).string();
    decision["n_test"] = rows.size();
    decision["minus1_first"] = minus1_first;
    write_json_file(files.decision, decision);

    char buf[200];
    std::snprintf(buf, sizeof buf, "%.4g", t);
    std::cout << "sieve predict: " << rows.size() << " rows written to " << out << " (method " << method
              << ", threshold " << buf << " from " << decision["threshold_source"].get<std::string>()
              << (tta != "none" ? ", TTA " + tta : "") << ")\n";
    std::snprintf(buf, sizeof buf, "  -1 first for %zu of %zu test images (%.1f%%)", minus1_first, rows.size(),
                  100.0 * static_cast<double>(minus1_first) / static_cast<double>(rows.size()));
    std::cout << buf << "\n";
    if (decision.contains("distractor_share")) {
      std::snprintf(buf, sizeof buf, "  threshold chosen for %.1f%% distractors%s",
                    100.0 * decision["distractor_share"].get<double>(),
                    share ? "" : " (estimated from the test images' scores)");
      std::cout << buf << "\n";
    }
    if (cal && cal->recommended != method) {
      const auto it = cal->methods.find(cal->recommended);
      if (it != cal->methods.end())
        std::cout << "  note: '" << cal->recommended << "' scored best on validation (MAP@5 " << it->second.val_map5
                  << "); try --method " << cal->recommended << "\n";
    }
    return 0;
  }
};

}  // namespace sieve::cli
