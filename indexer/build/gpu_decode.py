"""JPEGs decoded in batches on the model's GPU (nvJPEG, through torchvision), resized and normalised there.

A CPU decodes a reduced photo in about 2.5 ms per core; a GPU's model takes 0.03 ms (ViT-B/32 fp16 on an
H100), so on a GPU the CPU decoder is the bound. Here the CPU only reads each file, hashes it and reads its
header (size, EXIF orientation, the decompression-bomb limit); the pixels are decoded on the device. Files
that are not JPEGs, and JPEGs the GPU decoder refuses, go through the CPU decoder (indexer.decode.read_one),
which gives them their usual failure reasons. JPEGs have no transparency: PNGs, WebPs and the other formats
that may are all decoded, and laid on the index's background, by the CPU decoder.

The same code runs on CPU tensors (device "cpu"), which is how the tests check it.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

from PIL import ExifTags

from .decode import DecodedImage, DecodeFailure, FileBytes, content_hash, read_file, read_one
from ..errors import ImageDecodeError
from ..imaging import DEFAULT_BACKGROUND, MAX_PIXELS, open_header
from ..models.recipe import ImageRecipe

GPU_BATCH = 64  # JPEGs decoded by one call
READERS = 8  # threads reading files (I/O and hashing release the GIL)
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class _Read(FileBytes):
    width: int = 0
    height: int = 0
    orientation: int = 1


def gpu_decoding_available(device: str) -> bool:
    """torchvision decodes JPEGs on CUDA devices (nvJPEG); elsewhere the CPU decoders are used.

    torchvision 0.29 deprecates its decoders for TorchCodec's: once they are gone this says False and the
    CPU workers decode, as they do everywhere without CUDA.
    """
    if not device.startswith("cuda"):
        return False
    try:
        _decode_jpeg()
    except ImportError:
        return False
    return True


def _decode_jpeg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg
    return decode_jpeg, ImageReadMode


class DeviceJpegDecoder:
    def __init__(self, recipe: ImageRecipe, device: str, max_pixels: int = MAX_PIXELS,
                 background: str | None = DEFAULT_BACKGROUND):
        import torch

        self._torch, self.recipe, self.device, self.max_pixels = torch, recipe, device, max_pixels
        self.background = background  # for the files the CPU decodes: only they can be transparent
        self._mean = torch.tensor(recipe.mean, device=device).view(3, 1, 1)
        self._std = torch.tensor(recipe.std, device=device).view(3, 1, 1)

    def decode(self, paths: Sequence[str]) -> Iterator[DecodedImage | DecodeFailure]:
        """Each path's DecodedImage (pixels: a float tensor on the device) or DecodeFailure, in order."""
        with ThreadPoolExecutor(READERS) as readers:
            for start in range(0, len(paths), GPU_BATCH):
                reads = list(readers.map(_read, paths[start:start + GPU_BATCH]))
                yield from self._decode_batch(reads)

    def _decode_batch(self, reads: list[_Read | DecodeFailure]) -> list[DecodedImage | DecodeFailure]:
        out: list = list(reads)
        jpegs = [i for i, r in enumerate(reads) if isinstance(r, _Read) and self._is_jpeg(r)]
        for i, pixels in zip(jpegs, self._decode_jpegs([reads[i] for i in jpegs])):
            read = reads[i]
            out[i] = DecodedImage(read.path, content_hash(read.data), read.size, read.mtime, read.width, read.height,
                                  self._preprocess(pixels, read.orientation)) if pixels is not None else None
        for i, item in enumerate(out):
            if isinstance(item, _Read) or item is None:  # not a JPEG, or refused by the GPU decoder
                out[i] = read_one(reads[i].path, self.recipe, self.max_pixels, background=self.background)
        return out

    def _is_jpeg(self, read: _Read) -> bool:
        if not read.data.startswith(JPEG_MAGIC):
            return False
        try:
            header = open_header(read.data, self.max_pixels)
        except (ImageDecodeError, OSError, SyntaxError, ValueError):
            return False  # the CPU decoder says why
        read.width, read.height = header.size
        read.orientation = header.getexif().get(ExifTags.Base.Orientation, 1) or 1
        if read.orientation in (5, 6, 7, 8):
            read.width, read.height = read.height, read.width
        return header.mode in ("RGB", "L")  # CMYK and others: the CPU decoder converts them as Pillow does

    def _decode_jpegs(self, reads: list[_Read]) -> list:
        """Decoded uint8 CHW tensors, None for a file the decoder refuses (one bad file fails a whole batch
        call, so a failed batch is decoded file by file)."""
        decode_jpeg, ImageReadMode = _decode_jpeg()
        if not reads:
            return []
        tensors = [self._torch.frombuffer(bytearray(r.data), dtype=self._torch.uint8) for r in reads]
        with warnings.catch_warnings():  # each call warns that torchvision's decoders are deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._decode_each_way(decode_jpeg, ImageReadMode, tensors)

    def _decode_each_way(self, decode_jpeg, ImageReadMode, tensors) -> list:
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            out = []
            for tensor in tensors:
                try:
                    out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out

    def _preprocess(self, pixels, orientation: int):
        """uint8 CHW -> the recipe's float CHW: upright, short side resized (antialiased), centre crop."""
        torch = self._torch
        pixels = _upright(torch, pixels, orientation)
        side = self.recipe.side
        height, width = pixels.shape[1:]
        if self.recipe.resize_mode == "squash":
            size = (side, side)
        else:
            size = (side, int(side * width / height)) if height <= width else (int(side * height / width), side)
        mode = "bicubic" if self.recipe.interpolation == "bicubic" else "bilinear"
        image = pixels.unsqueeze(0).float()
        if (height, width) != size:
            image = torch.nn.functional.interpolate(image, size=size, mode=mode, antialias=True, align_corners=False)
        image = image.round_().clamp_(0, 255)[0]  # as a uint8 image would hold it
        top, left = int(round((image.shape[1] - side) / 2.0)), int(round((image.shape[2] - side) / 2.0))
        image = image[:, top:top + side, left:left + side] / 255.0
        return (image - self._mean) / self._std


def _upright(torch, pixels, orientation: int):
    """EXIF orientation on a CHW tensor (the same turns as PIL.ImageOps.exif_transpose)."""
    flip_w, turn = {2: (True, 0), 3: (False, 2), 4: (True, 2), 5: (True, 1), 6: (False, 3), 7: (True, 3),
                    8: (False, 1)}.get(orientation, (False, 0))
    if flip_w:
        pixels = torch.flip(pixels, dims=[2])
    return torch.rot90(pixels, turn, dims=[1, 2]) if turn else pixels


def _read(path: str) -> _Read | DecodeFailure:
    read = read_file(path)
    return read if isinstance(read, DecodeFailure) else _Read(read.path, read.data, read.size, read.mtime)

