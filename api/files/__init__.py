"""The data library: FITS files users upload and reference from jobs."""
