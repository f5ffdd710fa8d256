"""spectrum.extract: x1d tables, column names, wavelength range, min/max decimation that keeps the extremes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from marshmallow import ValidationError

from jobtypes import get_job_type
from tests.handlers.conftest import MakeContext
from worker.jobs import PermanentError, handler_for
from worker.jobs.spectrum import minmax_decimate

REF = {"key": "uploads/x1d.fits"}
N_POINTS = 50_000
PEAK_AT, TROUGH_AT = 12_345, 37_777


def load(**payload: Any) -> dict[str, Any]:
    return get_job_type("spectrum.extract").input_schema().load({"file": REF, **payload})  # type: ignore[union-attr]


def run(make_context: MakeContext, path: Path, **payload: Any) -> dict[str, Any]:
    ctx = make_context((REF, path))
    result = handler_for("spectrum.extract")(load(**payload), ctx)
    json.dumps(result, allow_nan=False)
    assert get_job_type("spectrum.extract").result_schema().validate(result) == {}  # type: ignore[union-attr, misc]
    return result  # type: ignore[no-any-return]


def spectrum() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1–5 µm, a noisy continuum with one single-point emission spike and one single-point absorption dip."""
    wave = np.linspace(1.0, 5.0, N_POINTS)
    flux = 1.0 + 0.1 * np.sin(wave * 7.0) + np.random.default_rng(3).normal(0.0, 0.01, N_POINTS)
    flux[PEAK_AT], flux[TROUGH_AT] = 9.0, -4.0
    return wave, flux, 0.01 * wave


def write_x1d(path: Path, wave: np.ndarray, flux: np.ndarray, error: np.ndarray | None = None,
              names: tuple[str, str, str] = ("WAVELENGTH", "FLUX", "FLUX_ERROR"), extname: str = "EXTRACT1D",
              fmt: str = "D") -> Path:
    """A JWST-like x1d file: primary, then a binary table (big-endian, as FITS stores it)."""
    columns = [fits.Column(names[0], fmt, unit="um", array=wave), fits.Column(names[1], fmt, unit="Jy", array=flux),
               fits.Column("DQ", "J", array=np.zeros(len(wave), np.int32))]
    if error is not None:
        columns.append(fits.Column(names[2], fmt, unit="Jy", array=error))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name=extname)]).writeto(path)
    return path


def test_decimation_keeps_extremes_endpoints_and_the_budget(make_context: MakeContext, tmp_path: Path) -> None:
    wave, flux, error = spectrum()
    result = run(make_context, write_x1d(tmp_path / "x1d.fits", wave, flux, error), max_points=500)

    assert result["hdu_name"] == "EXTRACT1D" and result["hdu_index"] == 1
    assert (result["wavelength_column"], result["flux_column"], result["error_column"]) == (
        "WAVELENGTH", "FLUX", "FLUX_ERROR")
    assert (result["wavelength_unit"], result["flux_unit"], result["error_unit"]) == ("um", "Jy", "Jy")
    assert result["n_points_total"] == result["n_points_in_range"] == N_POINTS
    assert 400 < result["n_points_returned"] == len(result["wavelength"]) <= 500 and result["decimated"]
    got_wave, got_flux = np.array(result["wavelength"]), np.array(result["flux"])
    assert np.all(np.diff(got_wave) > 0)
    assert got_wave[0] == wave[0] and got_wave[-1] == wave[-1]
    assert max(got_flux) == 9.0 and min(got_flux) == -4.0
    assert got_wave[np.argmax(got_flux)] == wave[PEAK_AT] and got_wave[np.argmin(got_flux)] == wave[TROUGH_AT]
    np.testing.assert_allclose(result["error"], 0.01 * got_wave)  # errors stay with their points
    np.testing.assert_array_equal(got_flux, flux[np.searchsorted(wave, got_wave)])
    assert result["range"] == {"requested": [None, None], "returned": [1.0, 5.0]}


def test_short_spectrum_is_returned_whole(make_context: MakeContext, tmp_path: Path) -> None:
    wave = np.linspace(0.6, 5.3, 300)
    result = run(make_context, write_x1d(tmp_path / "x1d.fits", wave, wave**2, wave / 10))

    assert result["n_points_returned"] == 300 and not result["decimated"]
    np.testing.assert_array_equal(result["wavelength"], wave)
    np.testing.assert_array_equal(result["flux"], wave**2)


def test_wavelength_range(make_context: MakeContext, tmp_path: Path) -> None:
    wave, flux, error = spectrum()
    path = write_x1d(tmp_path / "x1d.fits", wave, flux, error)

    result = run(make_context, path, wave_min=2.0, wave_max=2.5, max_points=100)

    inside = (wave >= 2.0) & (wave <= 2.5)
    assert result["n_points_in_range"] == int(inside.sum()) and result["n_points_returned"] <= 100
    assert result["wavelength"][0] == wave[inside][0] and result["wavelength"][-1] == wave[inside][-1]
    assert all(2.0 <= w <= 2.5 for w in result["wavelength"])
    assert result["range"]["requested"] == [2.0, 2.5]

    only_low = run(make_context, path, wave_min=4.99, max_points=100000)
    assert only_low["n_points_returned"] == int((wave >= 4.99).sum()) and not only_low["decimated"]

    nothing = run(make_context, path, wave_min=10.0, wave_max=11.0)
    assert nothing["wavelength"] == [] and nothing["n_points_returned"] == 0 and nothing["range"]["returned"] is None


def test_nan_flux_is_null_and_nan_wavelength_dropped(make_context: MakeContext, tmp_path: Path) -> None:
    wave = np.linspace(1.0, 2.0, 20)
    flux = np.ones(20)
    flux[5] = np.nan
    wave[0] = wave[19] = np.nan  # NIRSpec x1d edges
    result = run(make_context, write_x1d(tmp_path / "x1d.fits", wave, flux, np.full(20, np.nan)))

    assert result["n_points_total"] == 20 and result["n_points_returned"] == 18
    assert result["flux"][4] is None and result["error"] == [None] * 18


def test_unsorted_and_vector_columns_are_flattened_in_wavelength_order(make_context: MakeContext,
                                                                       tmp_path: Path) -> None:
    # HST-like: one row per detector segment, each a vector; segment B (the blue one) comes first.
    segment_b, segment_a = np.linspace(1100.0, 1200.0, 1000), np.linspace(1250.0, 1350.0, 1000)
    wave = np.stack([segment_a, segment_b])
    flux = np.stack([np.full(1000, 2.0), np.full(1000, 1.0)])
    path = tmp_path / "x1d.fits"
    fits.BinTableHDU.from_columns([
        fits.Column("WAVELENGTH", "1000D", unit="Angstrom", array=wave),
        fits.Column("FLUX", "1000E", unit="erg / (s cm2 Angstrom)", array=flux),
        fits.Column("ERROR", "1000E", array=flux / 10),
    ], name="SCI").writeto(path)

    result = run(make_context, path, max_points=100000)

    assert result["n_points_total"] == 2000 and result["error_column"] == "ERROR"
    assert np.all(np.diff(result["wavelength"]) > 0)
    assert result["flux"][:1000] == [1.0] * 1000 and result["flux"][1000:] == [2.0] * 1000


def test_common_and_explicit_column_names(make_context: MakeContext, tmp_path: Path) -> None:
    wave = np.linspace(1.0, 2.0, 50)
    path = write_x1d(tmp_path / "spec.fits", wave, 2 * wave, wave / 100, names=("wave", "flux", "err"),
                     extname="SPEC", fmt="E")

    auto = run(make_context, path)
    assert (auto["wavelength_column"], auto["flux_column"], auto["error_column"]) == ("wave", "flux", "err")
    assert auto["hdu_name"] == "SPEC"

    explicit = run(make_context, path, hdu=1, wavelength_column="WAVE", flux_column="err", error_column="dq")
    assert (explicit["flux_column"], explicit["error_column"]) == ("err", "DQ")
    assert explicit["flux"] == pytest.approx((wave / 100).tolist())


@pytest.mark.parametrize("payload, message", [
    ({"flux_column": "SURF_BRIGHT"}, "no flux column 'SURF_BRIGHT'"),
    ({"error_column": "NOPE"}, "no error column 'NOPE'"),
    ({"hdu": 0}, "not a table"),
    ({"flux_column": "NAME"}, "'NAME' is not a fixed-length numeric column"),
])
def test_bad_columns_and_hdus(make_context: MakeContext, tmp_path: Path, payload: dict[str, Any],
                              message: str) -> None:
    path = tmp_path / "x1d.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([
        fits.Column("WAVELENGTH", "D", array=np.arange(5.0)), fits.Column("FLUX", "D", array=np.ones(5)),
        fits.Column("NAME", "5A", array=np.array([b"a"] * 5))], name="EXTRACT1D")]).writeto(path)
    with pytest.raises(PermanentError, match=message):
        run(make_context, path, **payload)


def test_files_without_a_spectrum(make_context: MakeContext, tmp_path: Path) -> None:
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((3, 3))).writeto(image)
    with pytest.raises(PermanentError, match="no table HDU"):
        run(make_context, image)

    catalogue = tmp_path / "cat.fits"
    fits.BinTableHDU.from_columns([fits.Column("RA", "D", array=[1.0]), fits.Column("MAG", "E", array=[2.0])],
                                  name="CAT").writeto(catalogue)
    with pytest.raises(PermanentError, match="no table HDU has wavelength and flux columns"):
        run(make_context, catalogue)
    with pytest.raises(PermanentError, match=r"no flux column \(looked for FLUX"):
        run(make_context, catalogue, hdu="CAT", wavelength_column="RA")


def test_a_spectrum_beyond_the_memory_budget_is_refused(make_context: MakeContext, tmp_path: Path) -> None:
    wave, flux, _ = spectrum()
    ctx = make_context((REF, write_x1d(tmp_path / "x1d.fits", wave, flux)), memory_budget_bytes=2**20)
    with pytest.raises(PermanentError, match="budget"):
        handler_for("spectrum.extract")(load(), ctx)


def test_minmax_decimate() -> None:
    rng = np.random.default_rng(7)
    flux = rng.normal(size=10_001)
    for max_points in (10, 11, 101, 2000):
        picked = minmax_decimate(flux, max_points)
        assert len(picked) <= max_points and np.all(np.diff(picked) > 0)
        assert picked[0] == 0 and picked[-1] == 10_000
        assert np.argmax(flux) in picked and np.argmin(flux) in picked
    np.testing.assert_array_equal(minmax_decimate(flux[:50], 50), np.arange(50))

    gappy = np.ones(1000)
    gappy[100:400] = np.nan
    gappy[600] = np.nan
    picked = minmax_decimate(gappy, 100)
    assert np.isnan(gappy[picked]).sum() >= 5  # the long gap still shows as nulls…
    assert 600 not in picked  # …but a single NaN point is just skipped


def test_schema_defaults_and_bounds() -> None:
    assert load() == {"file": REF, "hdu": None, "wave_min": None, "wave_max": None, "max_points": 2000,
                      "wavelength_column": None, "flux_column": None, "error_column": None}
    assert load(max_points=10)["max_points"] == 10 and load(max_points=100000)["max_points"] == 100000
    assert load(wave_min=1, wave_max=2)["wave_max"] == 2
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_points": 9}, "max_points"), ({"max_points": 100001}, "max_points"),
        ({"wave_min": 2.0, "wave_max": 1.0}, "wave_max"), ({"wave_min": 1.0, "wave_max": 1.0}, "wave_max"),
        ({"wave_min": "NaN"}, "wave_min"), ({"wave_max": "inf"}, "wave_max"),
        ({"flux_column": ""}, "flux_column"), ({"hdu": "  "}, "hdu"), ({"wave": 1}, "wave"),
    ]
    for bad, field in cases:
        with pytest.raises(ValidationError) as info:
            load(**bad)
        assert field in info.value.messages, bad
