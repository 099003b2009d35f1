#pragma once
/// The Kaggle-style data folder of the retrieval-with-distractors task:
///
///   DATA/train.csv              id,label          (label: text without spaces (label_problem); never -1)
///   DATA/train/<id>.<jpg|png>
///   DATA/test/<id>.<jpg|png>
///   DATA/sample_submission.csv  id,predictions    (optional: defines the test ids and order)
///   DATA/outside/*.<jpg|png>    optional distractor images (validation, training negatives)
///
/// Ids and labels obey the submission's rules (submission_id_problem, label_problem in
/// submission.hpp): whatever a submission could not hold is refused here, before training.
/// open_data_folder() reads the structure strictly and fast (no pixel is decoded);
/// validate_data_folder() checks everything, decodes every image and reports all problems.

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/csv.hpp"
#include "sieve/io/dataset.hpp"
#include "sieve/io/detail/text.hpp"
#include "sieve/io/image.hpp"
#include "sieve/io/submission.hpp"

namespace sieve::io {

/// What a data-folder problem is about, so a report can list a few of each kind.
enum class ProblemKind { csv, id, file, image };

/// Plural noun of a kind, for "... and 12 more image problems".
inline const char* problem_kind_name(ProblemKind k) {
  switch (k) {
    case ProblemKind::csv: return "CSV";
    case ProblemKind::id: return "id and label";
    case ProblemKind::file: return "file";
    case ProblemKind::image: return "image";
  }
  return "other";
}

/// The distractor label of submissions and solutions.
inline constexpr std::string_view distractor_label = "-1";

/// A data folder's samples. Class ids index `classes`; outside samples carry label {-1}.
struct DataFolder {
  std::filesystem::path root;
  std::vector<std::string> classes;  ///< class id -> label text (integers sorted numerically, else by text)
  std::vector<FileSample> train;     ///< in train.csv order, labels = {class id}
  std::vector<FileSample> test;      ///< sample_submission.csv order if present, else sorted by id; labels = {}
  std::vector<FileSample> outside;   ///< sorted by file name; labels = {-1}

  /// Outside images among all labelled and outside images: the distractor share to expect of a
  /// test drawn like this folder (0 when there are none).
  double outside_share() const {
    const std::size_t n = train.size() + outside.size();
    return n ? static_cast<double>(outside.size()) / static_cast<double>(n) : 0.0;
  }

  /// Class id of a label, or -1 when it is not a training class.
  std::int32_t class_id(std::string_view label) const {
    const auto it = std::find(classes.begin(), classes.end(), label);
    return it == classes.end() ? -1 : static_cast<std::int32_t>(it - classes.begin());
  }
};

namespace detail {

/// Why an id cannot be used as a file name and a submission id, or empty when it can.
inline std::string unsafe_id_reason(std::string_view id) {
  if (const auto why = submission_id_problem(id); !why.empty()) return "id " + why;
  if (id.size() > 200) return "id longer than 200 bytes";
  if (id == "." || id == "..") return "id is '.' or '..'";
  if (id.find_first_of("/\\") != std::string_view::npos) return "id contains a path separator";
  if (id.find("..") != std::string_view::npos) return "id contains '..'";
  if (id.front() == '.' || id.front() == '-') return "id starts with '.' or '-'";
  return {};
}

/// The key under which labels count as near-duplicates: ASCII case folded, Latin-1 accented
/// letters and combining accents (U+0300-U+036F) reduced to their base letter, so NFC and NFD
/// spellings meet, and leading zeros of an integer dropped. (Whitespace needs no folding: a
/// label holding any is refused outright, see label_problem.)
inline std::string label_fold_key(std::string_view label) {
  // U+00C0..U+00FF -> base letter, '*' = keep as is.
  static constexpr std::string_view latin1 = "aaaaaaaceeeeiiiidnooooo*ouuuuy**aaaaaaaceeeeiiiidnooooo*ouuuuy*y";
  static_assert(latin1.size() == 64);
  std::string k;
  for (std::size_t i = 0; i < label.size(); ++i) {
    const auto c = static_cast<unsigned char>(label[i]);
    const auto next = i + 1 < label.size() ? static_cast<unsigned char>(label[i + 1]) : 0u;
    if ((c == 0xCC && next >= 0x80 && next <= 0xBF) || (c == 0xCD && next >= 0x80 && next <= 0xAF)) {
      ++i;  // a combining accent: dropped
    } else if (c == 0xC3 && next >= 0x80 && next <= 0xBF && latin1[next - 0x80] != '*') {
      k += latin1[next - 0x80];
      ++i;
    } else {
      k += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : static_cast<char>(c);
    }
  }
  const std::size_t sign = !k.empty() && (k[0] == '-' || k[0] == '+') ? 1 : 0;
  const bool integer = k.size() > sign && k.find_first_not_of("0123456789", sign) == std::string::npos;
  if (integer) {
    const std::size_t nz = std::min(k.find_first_not_of('0', sign), k.size() - 1);
    k.erase(sign, nz - sign);
  }
  return k;
}

inline bool is_image_extension(std::string ext) {
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

/// Is `p` (canonical) inside the directory `dir` (canonical)?
inline bool path_is_under(const std::filesystem::path& p, const std::filesystem::path& dir) {
  const auto [d, q] = std::mismatch(dir.begin(), dir.end(), p.begin(), p.end());
  return d == dir.end();
}

/// Image files of a directory by stem; a stem with two image files is reported in `dupes`.
/// Confinement: a symbolic link whose target lies outside both the data folder `root` and
/// `dir` itself (so a linked-in train/ directory is fine, a link from it to /etc is not) is
/// left out and its stem reported in `refused` with the reason (no confinement when null).
inline std::map<std::string, std::filesystem::path> list_images(const std::filesystem::path& dir,
                                                                 const std::filesystem::path& root,
                                                                 std::vector<std::string>* dupes,
                                                                 std::vector<std::string>* others,
                                                                 std::map<std::string, std::string>* refused) {
  namespace fs = std::filesystem;
  std::map<std::string, fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  const fs::path real_root = fs::canonical(root, ec), real_dir = fs::canonical(dir, ec);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const auto& p = e.path();
    if (!is_image_extension(p.extension().string())) {
      if (others && p.filename().string().front() != '.') others->push_back(printable(p.filename().string()));
      continue;
    }
    if (refused != nullptr && e.is_symlink(ec)) {
      std::error_code ec2;
      const fs::path target = fs::canonical(p, ec2);
      if (ec2 || !(path_is_under(target, real_root) || path_is_under(target, real_dir))) {
        refused->emplace(p.stem().string(), str(printable(p.string()), ": symbolic link to ",
                                                printable(ec2 ? p.string() : target.string()),
                                                ", outside the data folder (refused; copy the file in)"));
        continue;
      }
    }
    const auto [it, fresh] = out.emplace(p.stem().string(), p);
    if (!fresh && dupes) dupes->push_back(printable(p.stem().string()));
  }
  if (ec) fail(dir.string(), ": cannot list: ", ec.message());
  return out;
}

/// Class labels in a stable order: numerically when every label is an integer, else by text.
inline std::vector<std::string> order_classes(std::set<std::string> labels) {
  std::vector<std::string> v(labels.begin(), labels.end());
  auto as_int = [](const std::string& s) -> std::optional<long long> {
    long long x = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return x;
  };
  if (std::all_of(v.begin(), v.end(), [&](const std::string& s) { return as_int(s).has_value(); }))
    std::sort(v.begin(), v.end(), [&](const std::string& a, const std::string& b) { return *as_int(a) < *as_int(b); });
  return v;
}

/// Everything the two entry points share: structure parsed, problems collected.
struct FolderScan {
  DataFolder folder;
  std::vector<std::string> errors;
  std::vector<ProblemKind> error_kinds;  // error_kinds[i] is errors[i]'s
  std::vector<std::string> warnings;
};

inline FolderScan scan_data_folder(const std::filesystem::path& root, bool require_test) {
  namespace fs = std::filesystem;
  FolderScan s;
  s.folder.root = root;
  auto error = [&](ProblemKind kind, auto&&... parts) {
    s.errors.push_back(str(parts...));
    s.error_kinds.push_back(kind);
  };
  // A CSV's syntax problems are all reported, and its sound rows still checked.
  auto read_csv = [&](const fs::path& path) {
    std::vector<std::string> problems;
    auto t = read_csv_table_lenient(path, problems);
    for (auto& p : problems) error(ProblemKind::csv, std::move(p));
    return t;
  };
  auto warn = [&](auto&&... parts) { s.warnings.push_back(str(parts...)); };

  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    error(ProblemKind::file, root.string(), ": not a directory");
    return s;
  }

  // train.csv -> ids and labels.
  const fs::path train_csv = root / "train.csv";
  std::vector<std::string> dupes, others;
  std::map<std::string, std::string> refused;  // stem -> why its file is refused (already reported)
  const auto train_files = list_images(root / "train", root, &dupes, &others, &refused);
  for (const auto& [stem, why] : refused) error(ProblemKind::file, why);
  for (const auto& d : dupes) error(ProblemKind::file, str((root / "train").string(), ": two image files for id '", d, "'"));
  if (!fs::is_directory(root / "train", ec)) error(ProblemKind::file, (root / "train").string(), ": missing directory");
  std::vector<std::pair<std::string, std::string>> rows;  // id, label
  std::set<std::string> labels;
  std::map<std::string, std::size_t> label_line;  // first line of each label
  try {
    const auto t = read_csv(train_csv);
    const bool header_ok = t.header.size() == 2 && t.header[0] == "id" && t.header[1] == "label";
    if (t.header.empty()) {
      // an empty file, already reported
    } else if (!header_ok) {
      error(ProblemKind::csv, train_csv.string(), ":1: header must be 'id,label'");
    } else {
      std::unordered_map<std::string, std::size_t> seen;
      for (const auto& r : t.rows) {
        const auto& id = r.fields[0];
        const auto& label = r.fields[1];
        const std::string where = str(train_csv.string(), ":", r.line, ": ");
        if (const auto why = unsafe_id_reason(id); !why.empty()) {
          error(ProblemKind::id, where, why, " ('", printable(id), "')");
          continue;
        }
        // Seen before the label checks: a row with a bad label still accounts for its image.
        if (const auto [it, fresh] = seen.emplace(id, r.line); !fresh) {
          error(ProblemKind::id, where, "duplicate id '", id, "' (first on line ", it->second, ")");
          continue;
        }
        if (const auto why = label_problem(label); !why.empty()) {
          error(ProblemKind::id, where, "label '", printable(label), "' ", why, " (id '", id, "')");
          continue;
        }
        if (label == distractor_label) {
          error(ProblemKind::id, where, "label -1 is reserved for distractors (id '", id, "'); put such images in outside/");
          continue;
        }
        if (!train_files.count(id)) {
          if (refused.count(id)) continue;
          error(ProblemKind::file, where, "no image file train/", id, ".png|.jpg for id '", id, "'");
          continue;
        }
        rows.emplace_back(id, label);
        labels.insert(label);
        label_line.emplace(label, r.line);
      }
      for (const auto& [stem, path] : train_files)
        if (!seen.count(stem)) error(ProblemKind::file, printable(path.string()), ": image file has no row in train.csv");
      // Near-duplicate labels become separate classes: name each pair with a line of each.
      std::map<std::string, std::vector<std::string>> by_key;
      for (const auto& [label, line] : label_line) by_key[label_fold_key(label)].push_back(label);
      for (const auto& [key, group] : by_key)
        for (std::size_t i = 1; i < group.size(); ++i)
          warn(train_csv.string(), ": labels '", group[0], "' (line ", label_line.at(group[0]), ") and '", group[i],
               "' (line ", label_line.at(group[i]), ") differ only in case, accents or leading zeros; they are ",
               "two classes");
      if (t.rows.empty()) error(ProblemKind::csv, train_csv.string(), ": no rows");
    }
  } catch (const Error& e) {
    error(ProblemKind::csv, e.what());
  }
  s.folder.classes = order_classes(labels);
  std::unordered_map<std::string, std::int32_t> class_of;
  for (std::size_t k = 0; k < s.folder.classes.size(); ++k) class_of[s.folder.classes[k]] = static_cast<std::int32_t>(k);
  for (const auto& [id, label] : rows) s.folder.train.push_back({id, train_files.at(id), {class_of.at(label)}});

  // test/ and the optional sample_submission.csv.
  dupes.clear();
  refused.clear();
  const auto test_files = list_images(root / "test", root, &dupes, &others, &refused);
  for (const auto& [stem, why] : refused) error(ProblemKind::file, why);
  for (const auto& d : dupes) error(ProblemKind::file, (root / "test").string(), ": two image files for id '", d, "'");
  if (!fs::is_directory(root / "test", ec)) {
    if (require_test) error(ProblemKind::file, (root / "test").string(), ": missing directory");
  }
  const fs::path sample = root / "sample_submission.csv";
  if (fs::exists(sample, ec)) {
    try {
      const auto t = read_csv(sample);
      if (t.header.empty()) {
        // an empty file, already reported
      } else if (t.header[0] != "id") {
        error(ProblemKind::csv, sample.string(), ":1: header must start with 'id'");
      } else {
        std::unordered_map<std::string, std::size_t> seen;
        for (const auto& r : t.rows) {
          const auto& id = r.fields[0];
          const std::string where = str(sample.string(), ":", r.line, ": ");
          if (const auto why = unsafe_id_reason(id); !why.empty()) {
            error(ProblemKind::id, where, why, " ('", printable(id), "')");
            continue;
          }
          if (const auto [it, fresh] = seen.emplace(id, r.line); !fresh) {
            error(ProblemKind::id, where, "duplicate id '", id, "' (first on line ", it->second, ")");
            continue;
          }
          if (!test_files.count(id)) {
            if (refused.count(id)) continue;
            error(ProblemKind::file, where, "no image file test/", id, ".png|.jpg for id '", id, "'");
            continue;
          }
          s.folder.test.push_back({id, test_files.at(id), {}});
        }
        for (const auto& [stem, path] : test_files)
          if (!seen.count(stem)) warn(printable(path.string()), ": test image not listed in sample_submission.csv (ignored)");
      }
    } catch (const Error& e) {
      error(ProblemKind::csv, e.what());
    }
  } else {
    for (const auto& [stem, path] : test_files) {
      if (const auto why = unsafe_id_reason(stem); !why.empty()) {
        error(ProblemKind::id, printable(path.string()), ": ", why);
        continue;
      }
      s.folder.test.push_back({stem, path, {}});
    }
  }
  if (require_test && s.folder.test.empty() && fs::is_directory(root / "test", ec))
    error(ProblemKind::file, (root / "test").string(), ": no test images");

  // outside/: optional distractors.
  refused.clear();
  for (const auto& [stem, path] : list_images(root / "outside", root, nullptr, &others, &refused))
    s.folder.outside.push_back({stem, path, {-1}});
  for (const auto& [stem, why] : refused) error(ProblemKind::file, why);
  for (const auto& o : others) warn("ignored non-image file '", o, "'");
  return s;
}

}  // namespace detail


/// Read a data folder's structure (train.csv, train/, test/, sample_submission.csv, outside/).
/// Requires: nothing. Ensures: every train sample has a file and a class; test ids are safe
/// file names with files. Throws one sieve::Error listing every structural problem (decode
/// problems are found by validate_data_folder, not here).
inline DataFolder open_data_folder(const std::filesystem::path& root, bool require_test = true) {
  auto s = detail::scan_data_folder(root, require_test);
  if (!s.errors.empty())
    fail(root.string(), ": ", s.errors.size(), " problem", s.errors.size() == 1 ? "" : "s",
         " in the data folder (run `sieve validate --data ", root.string(), "` for a full report):",
         join_problems(s.errors));
  return std::move(s.folder);
}

/// What validate_data_folder found.
struct FolderReport {
  DataFolder folder;
  std::vector<std::string> errors;       ///< every problem, one line each, naming its file (and row)
  std::vector<ProblemKind> error_kinds;  ///< error_kinds[i] is the kind of errors[i]
  std::vector<std::string> warnings;
  std::map<std::string, std::size_t> label_counts;  ///< train images per label
  bool ok() const { return errors.empty(); }
};

/// Check a data folder completely, in one pass: its structure (as open_data_folder; every CSV
/// syntax problem, not just the first, with the sound rows still checked), then decode every
/// image under `limits`, naming each undecodable or oversized file with the reason. Never throws
/// for problems in the folder; `progress(done, total)` is called as images are checked.
inline FolderReport validate_data_folder(const std::filesystem::path& root, const DecodeLimits& limits = {},
                                         const std::function<void(std::size_t, std::size_t)>& progress = {}) {
  auto s = detail::scan_data_folder(root, /*require_test*/ true);
  FolderReport r{std::move(s.folder), std::move(s.errors), std::move(s.error_kinds), std::move(s.warnings), {}};
  for (const auto& t : r.folder.train) ++r.label_counts[r.folder.classes[static_cast<std::size_t>(t.labels[0])]];
  const std::size_t total = r.folder.train.size() + r.folder.test.size() + r.folder.outside.size();
  std::size_t done = 0;
  Image img;
  for (const auto* part : {&r.folder.train, &r.folder.test, &r.folder.outside}) {
    for (const auto& smp : *part) {
      try {
        read_image_into(smp.path, img, limits);
      } catch (const std::exception& e) {
        r.errors.push_back(e.what());
        r.error_kinds.push_back(ProblemKind::image);
      }
      if (progress && (++done % 256 == 0 || done == total)) progress(done, total);
    }
  }
  if (r.label_counts.size() == 1) r.warnings.push_back("train.csv has a single class");
  return r;
}

}  // namespace sieve::io
