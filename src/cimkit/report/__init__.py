"""Reports: a self-contained HTML page (plots embedded as PNG data URIs) from a results.json dict."""

from cimkit.report.html import Section, figure_html, table_html, write_report
from cimkit.report.summary import summary_rows

__all__ = ["Section", "figure_html", "summary_rows", "table_html", "write_report"]
