"""Statistics over a profile: `analyze_profile` computes them, the render functions present them."""

from membench.analyze.compute import analyze_profile
from membench.analyze.render import render_terminal, write_html, write_json
from membench.analyze.report import AnalysisReport

__all__ = ["AnalysisReport", "analyze_profile", "render_terminal", "write_html", "write_json"]
