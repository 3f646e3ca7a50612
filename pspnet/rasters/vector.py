"""A label GeoTIFF as polygons: one GeoPackage layer, a feature per connected region.

Regions are traced with ``rasterio.features.shapes`` and written with pyogrio (GDAL's vector
drivers), tile by tile, so memory follows a tile and not the scene: a region that crosses a
tile's edge is cut there into one feature per tile. Each feature carries its class id, class
name and area in the CRS's units (square metres for a projected CRS in metres).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pspnet.errors import ConfigError
from pspnet.rasters.outputs import NODATA
from pspnet.rasters.scene import rasterio_module

VECTOR_TILE = 4096
LAYER = "classes"


def write_polygons(
    label: Path, out: Path, class_names: Sequence[str], *, tile: int = VECTOR_TILE
) -> int:
    """Polygons of every labelled region of ``label`` into the GeoPackage ``out`` (replaced
    whole, atomically); the number of features."""
    rasterio = rasterio_module()
    try:
        import pyogrio
        import shapely
    except ImportError as err:
        raise ConfigError(
            f"--vector needs the geo extra ({err.name} is missing): pip install 'pspnet[geo]'"
        ) from err
    from rasterio.features import shapes
    from rasterio.windows import Window

    staged = out.with_name(f".{out.stem}.part{out.suffix}")  # GDAL wants the .gpkg suffix
    staged.unlink(missing_ok=True)
    count = 0
    with rasterio.open(label) as source:
        crs = source.crs.to_wkt() if source.crs else None
        for top in range(0, source.height, tile):
            for left in range(0, source.width, tile):
                window = Window(
                    left, top, min(tile, source.width - left), min(tile, source.height - top)
                )
                labels = source.read(1, window=window)
                transform = source.window_transform(window)
                regions = list(shapes(labels, mask=labels != NODATA, transform=transform))
                if not regions:
                    continue
                geometries = [shapely.geometry.shape(geometry) for geometry, _ in regions]
                ids = np.array([int(value) for _, value in regions], dtype=np.int32)
                names = np.array([class_names[i] for i in ids], dtype=object)
                areas = np.array([g.area for g in geometries], dtype=np.float64)
                pyogrio.raw.write(
                    staged,
                    shapely.to_wkb(geometries),
                    field_data=[ids, names, areas],
                    fields=["class_id", "class_name", "area"],
                    layer=LAYER,
                    driver="GPKG",
                    geometry_type="Polygon",
                    crs=crs,
                    append=count > 0,
                )
                count += len(regions)
    if count == 0:  # an all-nodata scene: an empty layer still says so
        pyogrio.raw.write(
            staged,
            np.array([], dtype=object),
            field_data=[np.array([], np.int32), np.array([], object), np.array([], np.float64)],
            fields=["class_id", "class_name", "area"],
            layer=LAYER,
            driver="GPKG",
            geometry_type="Polygon",
            crs=crs,
        )
    os.replace(staged, out)
    return count
