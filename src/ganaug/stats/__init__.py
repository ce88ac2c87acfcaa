"""Statistics of the arms' comparison: vectorised classification metrics over bootstrap resamples
(`metrics`), collapsed classifier seeds (`collapse`), and arm-vs-reference differences with
intervals that carry seed and test-image variance, paired tests and Holm's correction (`compare`),
and the comparison as tables and plot rows (`report`).
A plain Python API: the evaluate stage and the optimisation study call it on prediction arrays."""
