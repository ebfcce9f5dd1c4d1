"""The compression report: ``Report`` (JSON), a rich terminal rendering, PNG plots. No torch."""
from .edge import ArtifactRow, ExportReport, render_export, render_export_text
from .figures import plot_paths, write_plots
from .plots import plot_layers, plot_ranks, plot_search
from .environment import environment_meta
from .report import LayerRow, Report, fill_layer_latency
from .table import render, render_text

__all__ = ["ArtifactRow", "ExportReport", "LayerRow", "Report", "environment_meta", "fill_layer_latency",
           "plot_layers", "plot_paths", "plot_ranks", "plot_search", "render", "render_export",
           "render_export_text", "render_text", "write_plots"]
