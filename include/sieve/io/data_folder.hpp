#pragma once
/// The Kaggle-style data folder of the retrieval-with-distractors task:
///
///   DATA/train.csv              id,label          (label: any string or integer; never -1)
///   DATA/train/<id>.<jpg|png>
///   DATA/test/<id>.<jpg|png>
///   DATA/sample_submission.csv  id,predictions    (optional: defines the test ids and order)
///   DATA/outside/*.<jpg|png>    optional distractor images (validation, training negatives)
///
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
#include "sieve/io/image.hpp"

namespace sieve::io {

/// The distractor label of submissions and solutions.
inline constexpr std::string_view distractor_label = "-1";

/// A data folder's samples. Class ids index `classes`; outside samples carry label {-1}.
struct DataFolder {
  std::filesystem::path root;
  std::vector<std::string> classes;  ///< class id -> label text (integers sorted numerically, else by text)
  std::vector<FileSample> train;     ///< in train.csv order, labels = {class id}
  std::vector<FileSample> test;      ///< sample_submission.csv order if present, else sorted by id; labels = {}
  std::vector<FileSample> outside;   ///< sorted by file name; labels = {-1}

  /// Class id of a label, or -1 when it is not a training class.
  std::int32_t class_id(std::string_view label) const {
    const auto it = std::find(classes.begin(), classes.end(), label);
    return it == classes.end() ? -1 : static_cast<std::int32_t>(it - classes.begin());
  }
};

namespace detail {

/// Why an id cannot be used as a file name, or empty when it can.
inline std::string unsafe_id_reason(std::string_view id) {
  if (id.empty()) return "empty id";
  if (id.size() > 200) return "id longer than 200 bytes";
  if (id == "." || id == "..") return "id is '.' or '..'";
  if (id.find_first_of("/\\") != std::string_view::npos) return "id contains a path separator";
  if (id.find("..") != std::string_view::npos) return "id contains '..'";
  if (id.front() == '.' || id.front() == '-') return "id starts with '.' or '-'";
  for (char c : id)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "id contains a control character";
  return {};
}

inline bool is_image_extension(std::string ext) {
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

/// Image files of a directory by stem; a stem with two image files is reported in `dupes`.
inline std::map<std::string, std::filesystem::path> list_images(const std::filesystem::path& dir,
                                                                 std::vector<std::string>* dupes,
                                                                 std::vector<std::string>* others) {
  std::map<std::string, std::filesystem::path> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const auto& p = e.path();
    if (!is_image_extension(p.extension().string())) {
      if (others && p.filename().string().front() != '.') others->push_back(p.filename().string());
      continue;
    }
    const auto [it, fresh] = out.emplace(p.stem().string(), p);
    if (!fresh && dupes) dupes->push_back(p.stem().string());
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
  std::vector<std::string> warnings;
};

inline FolderScan scan_data_folder(const std::filesystem::path& root, bool require_test) {
  namespace fs = std::filesystem;
  FolderScan s;
  s.folder.root = root;
  auto error = [&](auto&&... parts) { s.errors.push_back(str(parts...)); };
  auto warn = [&](auto&&... parts) { s.warnings.push_back(str(parts...)); };

  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    error(root.string(), ": not a directory");
    return s;
  }

  // train.csv -> ids and labels.
  const fs::path train_csv = root / "train.csv";
  std::vector<std::string> dupes, others;
  const auto train_files = list_images(root / "train", &dupes, &others);
  for (const auto& d : dupes) error(str((root / "train").string(), ": two image files for id '", d, "'"));
  if (!fs::is_directory(root / "train", ec)) error((root / "train").string(), ": missing directory");
  std::vector<std::pair<std::string, std::string>> rows;  // id, label
  std::set<std::string> labels;
  try {
    const auto t = read_csv_table(train_csv);
    const bool header_ok = t.header.size() == 2 && t.header[0] == "id" && t.header[1] == "label";
    if (!header_ok) {
      error(train_csv.string(), ":1: header must be 'id,label'");
    } else {
      std::unordered_map<std::string, std::size_t> seen;
      for (const auto& r : t.rows) {
        const auto& id = r.fields[0];
        const auto& label = r.fields[1];
        const std::string where = str(train_csv.string(), ":", r.line, ": ");
        if (const auto why = unsafe_id_reason(id); !why.empty()) {
          error(where, why, " ('", id, "')");
          continue;
        }
        if (label.empty()) {
          error(where, "empty label for id '", id, "'");
          continue;
        }
        if (label == distractor_label) {
          error(where, "label -1 is reserved for distractors (id '", id, "'); put such images in outside/");
          continue;
        }
        if (const auto [it, fresh] = seen.emplace(id, r.line); !fresh) {
          error(where, "duplicate id '", id, "' (first on line ", it->second, ")");
          continue;
        }
        if (!train_files.count(id)) {
          error(where, "no image file train/", id, ".png|.jpg for id '", id, "'");
          continue;
        }
        rows.emplace_back(id, label);
        labels.insert(label);
      }
      for (const auto& [stem, path] : train_files)
        if (!seen.count(stem)) error(path.string(), ": image file has no row in train.csv");
      if (t.rows.empty()) error(train_csv.string(), ": no rows");
    }
  } catch (const Error& e) {
    error(e.what());
  }
  s.folder.classes = order_classes(labels);
  std::unordered_map<std::string, std::int32_t> class_of;
  for (std::size_t k = 0; k < s.folder.classes.size(); ++k) class_of[s.folder.classes[k]] = static_cast<std::int32_t>(k);
  for (const auto& [id, label] : rows) s.folder.train.push_back({id, train_files.at(id), {class_of.at(label)}});

  // test/ and the optional sample_submission.csv.
  dupes.clear();
  const auto test_files = list_images(root / "test", &dupes, &others);
  for (const auto& d : dupes) error((root / "test").string(), ": two image files for id '", d, "'");
  if (!fs::is_directory(root / "test", ec)) {
    if (require_test) error((root / "test").string(), ": missing directory");
  }
  const fs::path sample = root / "sample_submission.csv";
  if (fs::exists(sample, ec)) {
    try {
      const auto t = read_csv_table(sample);
      if (t.header.empty() || t.header[0] != "id") {
        error(sample.string(), ":1: header must start with 'id'");
      } else {
        std::unordered_map<std::string, std::size_t> seen;
        for (const auto& r : t.rows) {
          const auto& id = r.fields[0];
          const std::string where = str(sample.string(), ":", r.line, ": ");
          if (const auto why = unsafe_id_reason(id); !why.empty()) {
            error(where, why, " ('", id, "')");
            continue;
          }
          if (const auto [it, fresh] = seen.emplace(id, r.line); !fresh) {
            error(where, "duplicate id '", id, "' (first on line ", it->second, ")");
            continue;
          }
          if (!test_files.count(id)) {
            error(where, "no image file test/", id, ".png|.jpg for id '", id, "'");
            continue;
          }
          s.folder.test.push_back({id, test_files.at(id), {}});
        }
        for (const auto& [stem, path] : test_files)
          if (!seen.count(stem)) warn(path.string(), ": test image not listed in sample_submission.csv (ignored)");
      }
    } catch (const Error& e) {
      error(e.what());
    }
  } else {
    for (const auto& [stem, path] : test_files) {
      if (const auto why = unsafe_id_reason(stem); !why.empty()) {
        error(path.string(), ": ", why);
        continue;
      }
      s.folder.test.push_back({stem, path, {}});
    }
  }
  if (require_test && s.folder.test.empty() && fs::is_directory(root / "test", ec))
    error((root / "test").string(), ": no test images");

  // outside/: optional distractors.
  for (const auto& [stem, path] : list_images(root / "outside", nullptr, &others))
    s.folder.outside.push_back({stem, path, {-1}});
  for (const auto& o : others) warn("ignored non-image file '", o, "'");
  return s;
}

inline std::string join_problems(const std::vector<std::string>& v, std::size_t max_listed = 20) {
  std::string out;
  for (std::size_t i = 0; i < v.size() && i < max_listed; ++i) out += "\n  " + v[i];
  if (v.size() > max_listed) out += str("\n  ... and ", v.size() - max_listed, " more");
  return out;
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
         detail::join_problems(s.errors));
  return std::move(s.folder);
}

/// What validate_data_folder found.
struct FolderReport {
  DataFolder folder;
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
  std::map<std::string, std::size_t> label_counts;  ///< train images per label
  bool ok() const { return errors.empty(); }
};

/// Check a data folder completely: its structure (as open_data_folder), then decode every image
/// under `limits`, naming each undecodable or oversized file with the reason. Never throws for
/// problems in the folder; `progress(done, total)` is called as images are checked.
inline FolderReport validate_data_folder(const std::filesystem::path& root, const DecodeLimits& limits = {},
                                         const std::function<void(std::size_t, std::size_t)>& progress = {}) {
  auto s = detail::scan_data_folder(root, /*require_test*/ true);
  FolderReport r{std::move(s.folder), std::move(s.errors), std::move(s.warnings), {}};
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
      }
      if (progress && (++done % 256 == 0 || done == total)) progress(done, total);
    }
  }
  if (r.label_counts.size() == 1) r.warnings.push_back("train.csv has a single class");
  return r;
}

}  // namespace sieve::io
