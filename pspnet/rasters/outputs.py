"""A scene's georeferenced outputs, written band by band as the rows are finished.

``NAME_label.tif``: a tiled, compressed Cloud-Optimised GeoTIFF (internal overviews) with the
scene's CRS, transform and size, nodata 255, the palette as its colour table and the class
names in its metadata; beside it ``NAME_label.qml``, a QGIS style naming and colouring each
class (QGIS loads it with the raster), and GDAL's ``.aux.xml`` category names. With
``confidence``, ``NAME_confidence.tif`` (uint8, 255 = probability 1). Rows go to hidden
temporary GeoTIFFs; :meth:`SceneOutputs.finish` copies them into the Cloud-Optimised layout
and renames them into place, so a killed run leaves no half-written output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from pspnet.files import atomic_write, fsync_folder, make_folder
from pspnet.rasters.scene import Scene, rasterio_module

NODATA = 255
TILE = 512
SUFFIXES = ("_label.tif", "_label.qml", "_label.tif.aux.xml")


class SceneOutputs:
    """The label (and confidence) GeoTIFFs of one scene.

    Args:
        scene: the scene segmented (its georeference is copied).
        out_dir: the output folder.
        name: the outputs' name (NAME_label.tif ...).
        class_names: the classes, in label order.
        palette: their colours.
        confidence: also write NAME_confidence.tif.
        rank: the torchrun rank writing its strip of rows (its own temporary files); rank 0
            merges the others' (:meth:`merge`) and finishes.
    """

    def __init__(
        self,
        scene: Scene,
        out_dir: Path,
        name: str | Path,
        class_names: Sequence[str],
        palette: Sequence[tuple[int, int, int]],
        *,
        confidence: bool = False,
        rank: int = 0,
    ):
        rasterio = rasterio_module()
        self.out_dir = make_folder(out_dir)
        self.label = self.out_dir / f"{name}_label.tif"
        make_folder(self.label.parent)
        self.confidence = self.out_dir / f"{name}_confidence.tif" if confidence else None
        self.class_names, self.palette = tuple(class_names), tuple(palette)
        profile = dict(
            driver="GTiff",
            width=scene.width,
            height=scene.height,
            count=1,
            dtype="uint8",
            crs=scene.crs,
            transform=scene.transform,
            tiled=True,
            blockxsize=TILE,
            blockysize=TILE,
            compress="deflate",
            BIGTIFF="IF_SAFER",
        )
        self._parts = {}
        self._files = {}
        for final, nodata in ((self.label, NODATA), (self.confidence, None)):
            if final is None:
                continue
            part = _part(final, rank)
            self._parts[final] = part
            self._files[final] = rasterio.open(part, "w", nodata=nodata, **profile)
        labels = self._files[self.label]
        labels.write_colormap(1, _colormap(self.palette))
        labels.update_tags(class_names=json.dumps(self.class_names))

    def write(self, first: int, labels: np.ndarray, confidence: np.ndarray | None = None) -> None:
        """Rows ``first ..`` of the scene: (rows, W) labels (255: nodata or unknown) and,
        when written, (rows, W) confidence in [0, 1]."""
        from rasterio.windows import Window

        window = Window(0, first, labels.shape[1], labels.shape[0])
        self._files[self.label].write(np.asarray(labels, np.uint8)[None], window=window)
        if self.confidence is not None and confidence is not None:
            scaled = np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8)
            self._files[self.confidence].write(scaled[None], window=window)

    def close(self) -> None:
        """Close the temporary files, keeping them (for rank 0 to merge)."""
        for file in self._files.values():
            file.close()

    def merge(self, strips: list[tuple[int, int]]) -> None:
        """Rows ``strips[r]`` of rank r's temporary files into these (ranks 1 and on), band by
        band; their files removed."""
        from rasterio.windows import Window

        self.close()
        rasterio = rasterio_module()
        for final, part in self._parts.items():
            with rasterio.open(part, "r+") as target:
                for rank, (first, last) in enumerate(strips[1:], start=1):
                    other = _part(final, rank)
                    with rasterio.open(other) as source:
                        for top in range(first, last, TILE):
                            window = Window(0, top, source.width, min(TILE, last - top))
                            target.write(source.read(window=window), window=window)
                    other.unlink()

    def finish(self) -> list[Path]:
        """Cloud-Optimised copies renamed into place, the QGIS style beside; their paths."""
        import rasterio.shutil

        for file in self._files.values():
            file.close()
        written = []
        for final, part in self._parts.items():
            staged = final.with_name(f".{final.name}.cog")
            resampling = "MODE" if final == self.label else "AVERAGE"
            rasterio.shutil.copy(
                part,
                staged,
                driver="COG",
                COMPRESS="DEFLATE",
                RESAMPLING=resampling,
                BLOCKSIZE=TILE,
                NUM_THREADS="ALL_CPUS",  # the network is done: every core compresses
                BIGTIFF="IF_SAFER",
            )
            os.replace(staged, final)
            part.unlink()
            written.append(final)
        style = self.label.with_suffix(".qml")
        atomic_write(
            style, lambda tmp: Path(tmp).write_text(qgis_style(self.class_names, self.palette))
        )
        categories = self.label.with_name(self.label.name + ".aux.xml")
        atomic_write(categories, lambda tmp: Path(tmp).write_text(category_names(self.class_names)))
        fsync_folder(self.label.parent)
        return [*written, style, categories]

    def discard(self) -> None:
        """Close and remove the temporary files (a failed or interrupted scene)."""
        for file in self._files.values():
            file.close()
        for part in self._parts.values():
            part.unlink(missing_ok=True)
            part.with_name(part.name.replace(".part", ".cog")).unlink(missing_ok=True)


def _part(final: Path, rank: int) -> Path:
    """The temporary file of one rank's rows of ``final``."""
    return final.with_name(f".{final.name}.part" + (f"{rank}" if rank else ""))


def _colormap(palette: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    colours = {index: (*colour, 255) for index, colour in enumerate(palette)}
    colours[NODATA] = (0, 0, 0, 0)  # nodata and unknown: transparent
    return colours


def qgis_style(class_names: Sequence[str], palette: Sequence[tuple[int, int, int]]) -> str:
    """A QGIS layer style: a paletted renderer with each class's value, colour and name."""
    entries = "\n".join(
        f'          <paletteEntry value="{index}" color="#{r:02x}{g:02x}{b:02x}" '
        f'alpha="255" label="{escape(name, {chr(34): "&quot;"})}"/>'
        for index, (name, (r, g, b)) in enumerate(zip(class_names, palette, strict=True))
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" nodataColor="">
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
  </pipe>
</qgis>
"""


def category_names(class_names: Sequence[str]) -> str:
    """GDAL's auxiliary metadata naming band 1's values (read by GDAL and the GIS on it)."""
    categories = "\n".join(f"      <Category>{escape(name)}</Category>" for name in class_names)
    return f"""<PAMDataset>
  <PAMRasterBand band="1">
    <CategoryNames>
{categories}
    </CategoryNames>
  </PAMRasterBand>
</PAMDataset>
"""
