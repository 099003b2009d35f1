#pragma once
/// An offline HTML report page: title, sections, paragraphs, inline SVG, <img> of PNGs by
/// relative path, tables. No scripts, external fonts or stylesheets; the output is also
/// well-formed XML (XHTML syntax), so tests and tools can parse it.

#include <cctype>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sieve/core/check.hpp"
#include "sieve/io/file.hpp"
#include "sieve/viz/svg.hpp"

namespace sieve::viz {

/// Builds one HTML page piece by piece, in order.
class HtmlPage {
 public:
  explicit HtmlPage(std::string title) : title_(std::move(title)) {}

  /// A new section heading (h2).
  HtmlPage& section(std::string_view heading) {
    body_ += "<h2>" + xml_escape(heading) + "</h2>\n";
    return *this;
  }

  /// A paragraph of plain text (escaped).
  HtmlPage& paragraph(std::string_view text) {
    body_ += "<p>" + xml_escape(text) + "</p>\n";
    return *this;
  }

  /// An inline SVG figure with an optional caption.
  /// Requires: `svg` is one <svg ...>...</svg> element (an XML declaration is dropped); script
  /// and external references are refused, so the page stays offline and inert.
  HtmlPage& svg(std::string_view svg, std::string_view caption = {}) {
    if (svg.substr(0, 5) == "<?xml") {
      const auto end = svg.find("?>");
      svg = end == std::string_view::npos ? std::string_view{} : svg.substr(end + 2);
    }
    while (!svg.empty() && (svg.front() == '\n' || svg.front() == ' ')) svg.remove_prefix(1);
    SIEVE_CHECK(svg.substr(0, 4) == "<svg", "HtmlPage::svg: markup must start with <svg, got '",
                svg.substr(0, 20), "'");
    SIEVE_CHECK(svg.find("<script") == std::string_view::npos && svg.find("href=\"http") == std::string_view::npos &&
                    svg.find("javascript:") == std::string_view::npos && !has_event_attribute(svg),
                "HtmlPage::svg: scripts, event handlers and external references are not allowed in an offline report");
    body_ += "<figure>\n";
    body_.append(svg);
    if (!caption.empty()) body_ += "<figcaption>" + xml_escape(caption) + "</figcaption>\n";
    body_ += "</figure>\n";
    return *this;
  }

  /// An image by path relative to the page (PNGs the report wrote beside it).
  /// Requires: a relative path without "..", a URL scheme, or a backslash.
  HtmlPage& image(std::string_view relative_path, std::string_view alt, std::string_view caption = {},
                  int width_px = 0) {
    const std::filesystem::path p(relative_path);
    bool dotdot = false;
    for (const auto& part : p) dotdot = dotdot || part == "..";
    SIEVE_CHECK(!relative_path.empty() && p.is_relative() && !dotdot &&
                    relative_path.find(':') == std::string_view::npos &&
                    relative_path.find('\\') == std::string_view::npos,
                "HtmlPage::image: '", relative_path, "' must be a relative path inside the report folder");
    body_ += "<figure>\n<img src=\"" + xml_escape(relative_path) + "\" alt=\"" + xml_escape(alt) + "\"" +
             (width_px > 0 ? " width=\"" + std::to_string(width_px) + "\"" : std::string()) + "/>\n";
    if (!caption.empty()) body_ += "<figcaption>" + xml_escape(caption) + "</figcaption>\n";
    body_ += "</figure>\n";
    return *this;
  }

  /// A table with a header row. Requires: every row has header.size() cells.
  HtmlPage& table(std::span<const std::string> header, std::span<const std::vector<std::string>> rows) {
    for (std::size_t r = 0; r < rows.size(); ++r)
      SIEVE_CHECK(rows[r].size() == header.size(), "HtmlPage::table: row ", r, " has ", rows[r].size(),
                  " cells but the header has ", header.size());
    body_ += "<table>\n<thead><tr>";
    for (const auto& h : header) body_ += "<th>" + xml_escape(h) + "</th>";
    body_ += "</tr></thead>\n<tbody>\n";
    for (const auto& row : rows) {
      body_ += "<tr>";
      for (const auto& cell : row) body_ += "<td>" + xml_escape(cell) + "</td>";
      body_ += "</tr>\n";
    }
    body_ += "</tbody>\n</table>\n";
    return *this;
  }

  /// The whole document.
  std::string html() const {
    std::string s =
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>" +
        xml_escape(title_) + "</title>\n<style>\n" + std::string(kStyle) + "</style>\n</head>\n<body>\n<h1>" +
        xml_escape(title_) + "</h1>\n";
    return s + body_ + "</body>\n</html>\n";
  }

  /// Write the page atomically.
  void write(const std::filesystem::path& path) const { io::write_file_atomic(path, std::string_view(html())); }

 private:
  // An attribute such as onload= inside a tag would run script when the page opens.
  static bool has_event_attribute(std::string_view s) {
    bool in_tag = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '<') in_tag = true;
      else if (s[i] == '>') in_tag = false;
      if (!in_tag || i + 3 >= s.size()) continue;
      if (!(s[i] == ' ' || s[i] == '\n' || s[i] == '\t') || (s[i + 1] | 0x20) != 'o' || (s[i + 2] | 0x20) != 'n') continue;
      std::size_t j = i + 3;
      while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]))) ++j;
      if (j > i + 3 && j < s.size() && s[j] == '=') return true;
    }
    return false;
  }

  static constexpr std::string_view kStyle =
      "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;"
      "color:#222}\n"
      "h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:6px}\nh2{font-size:1.25em;margin-top:1.8em}\n"
      "figure{margin:12px 0}\nfigcaption{color:#555;font-size:.9em}\nimg,svg{max-width:100%;height:auto}\n"
      "table{border-collapse:collapse;margin:8px 0}\nth,td{border:1px solid #ccc;padding:4px 10px;text-align:left}\n"
      "th{background:#f3f3f3}\ntbody tr:nth-child(even){background:#fafafa}\n";
  std::string title_;
  std::string body_;
};

}  // namespace sieve::viz
