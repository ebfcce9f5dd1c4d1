"""The compression report: ``Report`` (JSON), a rich terminal rendering, PNG plots. No torch."""
from .edge import ArtifactRow, ExportReport, render_export, render_export_text
from .plots import plot_layers, plot_ranks
from .report import LayerRow, Report, environment_meta, fill_layer_latency
from .table import render, render_text

__all__ = ["ArtifactRow", "ExportReport", "render_export", "render_export_text", "LayerRow", "Report", "environment_meta", "fill_layer_latency", "render", "render_text",
           "plot_layers", "plot_ranks"]
