"""The compression report: ``Report`` (JSON), a rich terminal rendering, PNG plots. No torch."""
from .figures import plot_paths, write_plots
from .plots import plot_layers, plot_ranks, plot_search
from .report import LayerRow, Report, environment_meta, fill_layer_latency
from .table import render, render_text

__all__ = ["LayerRow", "Report", "environment_meta", "fill_layer_latency", "render", "render_text",
           "plot_layers", "plot_paths", "plot_ranks", "plot_search", "write_plots"]
