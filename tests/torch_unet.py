"""The reference UNet in PyTorch: the module of DESIGN.md, as the common tutorial writes it, with
the skip center-crop. Its state_dict names are the engine's. Imported by the parity scripts."""
import torch
import torch.nn as nn


class PySiLU(nn.Module):
    """pysilu(x) = x for x >= 0, x / (1 + x^2) for x < 0."""

    def forward(self, x):
        return torch.where(x >= 0, x, x / (1 + x * x))


def activation(name):
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "pysilu": PySiLU}[name]()


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, act, bias):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1, bias=bias), nn.BatchNorm2d(cout), activation(act),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=bias), nn.BatchNorm2d(cout), activation(act))

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    def __init__(self, in_channels=3, out_channels=1, features=(64, 128, 256, 512), act="relu", conv_bias=False):
        super().__init__()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        c = in_channels
        for f in features:
            self.downs.append(DoubleConv(c, f, act, conv_bias))
            c = f
        for f in reversed(features):
            self.ups.append(nn.ConvTranspose2d(2 * f, f, kernel_size=2, stride=2))
            self.ups.append(DoubleConv(2 * f, f, act, conv_bias))
        self.bottleneck = DoubleConv(features[-1], 2 * features[-1], act, conv_bias)
        self.final_conv = nn.Conv2d(features[0], out_channels, kernel_size=1)

    def forward(self, x):
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        skips = skips[::-1]
        for k in range(0, len(self.ups), 2):
            x = self.ups[k](x)
            s = skips[k // 2]
            if s.shape[2:] != x.shape[2:]:
                h, w = x.shape[2], x.shape[3]
                top, left = (s.shape[2] - h) // 2, (s.shape[3] - w) // 2
                s = s[:, :, top:top + h, left:left + w]
            x = self.ups[k + 1](torch.cat([s, x], dim=1))
        return self.final_conv(x)


def config_metadata(in_channels, out_channels, features, act, conv_bias):
    return {"model": "unet", "in_channels": str(in_channels), "out_channels": str(out_channels),
            "features": ",".join(str(f) for f in features), "activation": act,
            "conv_bias": "true" if conv_bias else "false"}


def from_metadata(md):
    return UNet(int(md["in_channels"]), int(md["out_channels"]), tuple(int(f) for f in md["features"].split(",")),
                md["activation"], md["conv_bias"] == "true")
