"""The report page (`reports/index.html`): one self-contained HTML file with the answer, the
figures and the lineage of a pipeline run (`ganaug.report.build`), its HTML builder
(`ganaug.report.html`), its figures (`ganaug.report.figures`), its MLflow lookups
(`ganaug.report.lineage`) and a headless-Chromium check of the page (`ganaug.report.browser`)."""
