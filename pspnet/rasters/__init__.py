"""Rasters: multi-band, 16-bit, georeferenced scenes of any size, on GDAL through rasterio.

- :mod:`.scene`: :class:`~pspnet.rasters.scene.Scene`, a raster opened with its bands, nodata
  and georeference, read window by window;
- :mod:`.segment`: :func:`~pspnet.rasters.segment.segment_scene`, the one inference routine
  streamed over a scene (:mod:`pspnet.inference.streaming`), rows written as they finish;
- :mod:`.outputs`: the label (and confidence) Cloud-Optimised GeoTIFFs and their QGIS style;
- :mod:`.vector`: the labels as a GeoPackage of polygons.

Needs the ``geo`` extra (``pip install 'pspnet[geo]'``: rasterio, pyogrio, shapely).
"""
