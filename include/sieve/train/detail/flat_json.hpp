#pragma once
/// A tiny JSON object of scalar values (the trainer's state.json), without a JSON library:
/// the library must not depend on nlohmann_json. Keys are dotted paths ("early_stopping.best");
/// values are kept as their JSON text (numbers, true/false/null, or quoted strings).

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sieve/core/check.hpp"

namespace sieve::train::detail {

class FlatJson {
 public:
  void set_raw(std::string key, std::string json_text) {
    for (auto& kv : kv_)
      if (kv.first == key) {
        kv.second = std::move(json_text);
        return;
      }
    kv_.emplace_back(std::move(key), std::move(json_text));
  }
  void set(std::string key, std::int64_t v) { set_raw(std::move(key), std::to_string(v)); }
  /// 64-bit seeds are stored as decimal strings: JSON readers often keep only 53 bits.
  void set_u64(std::string key, std::uint64_t v) { set_string(std::move(key), std::to_string(v)); }
  /// Doubles print with 17 significant digits (exact round trip); non-finite ones as strings.
  void set(std::string key, double v) {
    if (!std::isfinite(v)) return set_string(std::move(key), std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    set_raw(std::move(key), buf);
  }
  void set(std::string key, bool v) { set_raw(std::move(key), v ? "true" : "false"); }
  void set_string(std::string key, std::string_view v) { set_raw(std::move(key), quote(v)); }

  bool has(const std::string& key) const { return find(key) != nullptr; }
  const std::vector<std::pair<std::string, std::string>>& items() const { return kv_; }

  std::int64_t get_i64(const std::string& key) const {
    const std::string& t = need(key);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(t.c_str(), &end, 10);
    SIEVE_CHECK(end && *end == '\0' && errno == 0, source_, ": '", key, "' is ", t, ", not an integer");
    return v;
  }
  std::uint64_t get_u64(const std::string& key) const {
    const std::string t = get_string(key);
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(t.c_str(), &end, 10);
    SIEVE_CHECK(!t.empty() && end && *end == '\0' && errno == 0, source_, ": '", key, "' is \"", t,
                "\", not an unsigned 64-bit integer");
    return v;
  }
  double get_double(const std::string& key) const {
    const std::string& t = need(key);
    if (!t.empty() && t[0] == '"') {
      const std::string s = get_string(key);
      if (s == "nan") return std::nan("");
      if (s == "inf") return INFINITY;
      if (s == "-inf") return -INFINITY;
      fail(source_, ": '", key, "' is \"", s, "\", not a number");
    }
    char* end = nullptr;
    const double v = std::strtod(t.c_str(), &end);
    SIEVE_CHECK(end && *end == '\0', source_, ": '", key, "' is ", t, ", not a number");
    return v;
  }
  bool get_bool(const std::string& key) const {
    const std::string& t = need(key);
    SIEVE_CHECK(t == "true" || t == "false", source_, ": '", key, "' is ", t, ", not true/false");
    return t == "true";
  }
  std::string get_string(const std::string& key) const {
    const std::string& t = need(key);
    SIEVE_CHECK(t.size() >= 2 && t.front() == '"' && t.back() == '"', source_, ": '", key, "' is ", t,
                ", not a string");
    return unquote(t);
  }

  std::string dump() const {
    std::string out = "{\n";
    for (std::size_t i = 0; i < kv_.size(); ++i) {
      out += "  " + quote(kv_[i].first) + ": " + kv_[i].second;
      out += i + 1 < kv_.size() ? ",\n" : "\n";
    }
    return out + "}\n";
  }

  /// Parse what dump() writes (any flat JSON object of scalars). Errors name `source`.
  static FlatJson parse(std::string_view text, std::string source) {
    FlatJson j;
    j.source_ = std::move(source);
    std::size_t i = 0;
    auto ws = [&] {
      while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) ++i;
    };
    auto bad = [&](const char* what) { fail(j.source_, ": malformed JSON at byte ", i, ": ", what); };
    auto string_token = [&]() -> std::string {
      if (i >= text.size() || text[i] != '"') bad("expected a string");
      const std::size_t b = i++;
      while (i < text.size() && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
      if (i >= text.size()) bad("unterminated string");
      ++i;
      return std::string(text.substr(b, i - b));
    };
    ws();
    if (i >= text.size() || text[i] != '{') bad("expected '{'");
    ++i;
    ws();
    if (i < text.size() && text[i] == '}') return ++i, j;
    while (true) {
      ws();
      const std::string key = unquote(string_token());
      ws();
      if (i >= text.size() || text[i] != ':') bad("expected ':'");
      ++i;
      ws();
      std::string value;
      if (i < text.size() && text[i] == '"') {
        value = string_token();
      } else {
        const std::size_t b = i;
        while (i < text.size() && text[i] != ',' && text[i] != '}' && text[i] != '\n' && text[i] != ' ') ++i;
        value = std::string(text.substr(b, i - b));
        if (value.empty()) bad("expected a value");
      }
      if (j.has(key)) fail(j.source_, ": duplicate key '", key, "'");
      j.kv_.emplace_back(key, value);
      ws();
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '}') {
        ++i;
        break;
      }
      bad("expected ',' or '}'");
    }
    ws();
    if (i != text.size()) bad("trailing bytes after the object");
    return j;
  }

  static std::string quote(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
        out += buf;
      } else {
        out += c;
      }
    }
    return out + "\"";
  }

 private:
  static std::string unquote(std::string_view t) {
    std::string out;
    for (std::size_t i = 1; i + 1 < t.size(); ++i) {
      if (t[i] != '\\') {
        out += t[i];
        continue;
      }
      const char e = t[++i];
      if (e == 'n') out += '\n';
      else if (e == 't') out += '\t';
      else if (e == 'r') out += '\r';
      else if (e == 'u' && i + 4 < t.size()) {
        out += static_cast<char>(std::strtol(std::string(t.substr(i + 1, 4)).c_str(), nullptr, 16) & 0x7f);
        i += 4;
      } else out += e;  // \" \\ \/
    }
    return out;
  }
  const std::string* find(const std::string& key) const {
    for (const auto& kv : kv_)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  const std::string& need(const std::string& key) const {
    const std::string* v = find(key);
    if (!v) fail(source_, ": missing key '", key, "'");
    return *v;
  }

  std::vector<std::pair<std::string, std::string>> kv_;
  std::string source_ = "state.json";
};

}  // namespace sieve::train::detail
