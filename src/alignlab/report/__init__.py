"""Reports: terminal views of samples, HTML run reports with plots."""
