"""Writes the attribution example notebooks in ``nbs/examples/``, without outputs.

    python nbs/build_notebooks.py          # rewrites the three notebooks below

The notebooks are the product; this script only keeps their shared cells (set-up, the plotting
helper, the example photo, the pretrained path) identical. Cell ids are fixed, so rewriting a
notebook that did not change gives the same file. ``tests/test_notebooks.py`` executes every
notebook in ``nbs/examples/``.
"""

from __future__ import annotations

import textwrap

import nbformat
from _nbtools import code, md, write  # nbs/ is the script's folder

# ---------------------------------------------------------------------------------------------
# cells shared by the three notebooks

SETUP = code('''
    %matplotlib inline
    import numpy as np
    import torch
    import torchvision
    from IPython.display import display

    import netlens as nl
    from netlens.data import SHAPES_CLASSES
''')

SHAPES_INTRO = md('''
    ## Model 1: the embedded shapes model

    `nl.zoo.shapes_model()` is a small ResNet that ships with netlens, trained on the synthetic
    shapes dataset of `nl.data.make_shapes`: one object (circle, square, triangle or plus) per
    image, and an elongated ellipse as a distractor that has nothing to do with the class. Every
    image comes with the object's mask, so we know where the evidence *is*, and can see whether
    an explanation points at it. The model takes raw `[0, 1]` pixels: no normalization, so every
    plotting call below passes `mean=None, std=None`.

    The images come from a fixed seed that the model was never trained on.
''')

SHAPES_LOAD = code('''
    model = nl.zoo.shapes_model()          # no download: the weights ship with netlens
    lens = nl.NetLens(model)               # the model itself is never changed
    batch = nl.data.make_shapes(4, seed=2027)
    x, y, masks = batch.images, batch.labels, batch.masks
    with torch.no_grad():
        pred = model(x).argmax(1)
    print("true:", [SHAPES_CLASSES[int(t)] for t in y])
    print("pred:", [SHAPES_CLASSES[int(p)] for p in pred])
''')

HELPER = code('''
    def show_maps(images, maps, masks=None, *, mean=None, std=None, overlay=False,
                  reduce="abs_max", cmap="inferno", labels=None, panel_size=1.7):
        """One row per image: the image, its ground-truth mask (if given), then one panel per
        map. Maps are scaled to [0, 1] by nl.plot.normalize_map (or blended over the image with
        nl.plot.overlay); the object's outline is drawn over them in cyan. mean and std are
        those the images were normalized with (None: raw pixels, as for the shapes model)."""
        panels, titles = [], []
        for i in range(len(images)):
            row = [nl.image.to_numpy(images[i], mean, std)]
            names = ["image" if labels is None else labels[i]]
            if masks is not None:
                row.append(masks[i, 0].float().numpy())
                names.append("ground truth")
            for name, attr in maps.items():
                if overlay:
                    row.append(nl.plot.overlay(images[i], attr[i], mean=mean, std=std,
                                               reduce=reduce))
                else:
                    row.append(nl.plot.normalize_map(attr[i], reduce=reduce)[0, 0].cpu().numpy())
                names.append(name)
            panels += row
            titles += names if i == 0 or labels is not None else [""] * len(names)
        ncols = len(panels) // len(images)
        fig = nl.plot.grid(panels, titles, ncols=ncols, cmap=cmap, panel_size=panel_size)
        if masks is not None:
            first_map = 2
            for k, ax in enumerate(fig.axes):
                if k % ncols >= first_map:
                    ax.contour(masks[k // ncols, 0].float().numpy(), levels=[0.5],
                               colors="cyan", linewidths=0.7)
        return fig
''')

IMAGENET_INTRO = md('''
    ## Model 2: a torchvision ResNet-18 (random weights)

    The same calls work on any torchvision-style classifier. No weights can be downloaded where
    these notebooks are tested, so this ResNet-18 keeps its random initialization (seeded):
    its maps show what the *architecture and the image* produce, not what a trained network
    learned, which is itself worth seeing (Adebayo et al., "Sanity Checks for Saliency Maps",
    2018): a method whose map looks just as convincing for random weights is telling you about
    the image, not about the model. The last section shows the pretrained path.

    The photo is Grace Hopper from matplotlib's sample data (public domain); if that file is
    missing, a drawn stand-in is used. ImageNet models take normalized input:
    `nl.image.normalize` applies ImageNet's mean and std, and the plotting functions undo it by
    default. Target 652 is ImageNet's "military uniform", the class trained ImageNet
    models usually give this photo.
''')

PHOTO = code('''
    def example_photo(size):
        """Grace Hopper as a raw [0, 1] tensor (1, 3, H, W), or a drawn image without her."""
        image, _ = nl.data.example_photo(size)  # a drawn image where the photo is missing
        return image

    IMAGENET = dict(mean=nl.image.IMAGENET_MEAN, std=nl.image.IMAGENET_STD)  # for the plots

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().eval()    # random init: nothing is downloaded
    resnet_lens = nl.NetLens(resnet)
    TARGET = 652                                     # "military uniform"
    print(nl.data.imagenet_classes()[TARGET])
''')

PRETRAINED_INTRO = md('''
    ## With pretrained weights

    With internet access, the same code explains a trained ImageNet model. Set
    `PRETRAINED = True` to download ResNet-50's weights (about 100 MB, once, into torch's cache)
    and run the cell. It is off by default so that the notebook runs anywhere, tests included.
''')


def pretrained_cell(body: str) -> nbformat.NotebookNode:
    """The guarded pretrained cell; ``body`` is indented under ``if PRETRAINED:`` and may use
    ``net``, ``net_lens``, ``photo`` (normalized, 224 px), ``target`` and ``labels``."""
    head = '''
        PRETRAINED = False   # True downloads torchvision's ResNet-50 ImageNet weights

        if PRETRAINED:
            net = torchvision.models.resnet50(weights="DEFAULT").eval()
            net_lens = nl.NetLens(net)
            photo = nl.image.normalize(example_photo(224))
            labels = nl.data.imagenet_classes()
            with torch.no_grad():
                top = net(photo).softmax(1).topk(3)
            for p, c in zip(top.values[0], top.indices[0]):
                print(f"{labels[int(c)]:>20s}  {float(p):.2f}")
            target = int(top.indices[0, 0])
    '''
    return code(textwrap.dedent(head) + textwrap.indent(textwrap.dedent(body).strip(), " " * 4))


# ---------------------------------------------------------------------------------------------
# Visual-Gradient_backprop.ipynb


def gradient_notebook() -> list[nbformat.NotebookNode]:
    return [
        md('''
            # Gradient attributions: saliency, guided backprop, SmoothGrad, integrated gradients

            A gradient attribution asks: *if this pixel changed a little, how much would the
            score of the target class change?* The answer is a map with the input's shape
            `(B, 3, H, W)`. This notebook runs every gradient method of netlens on two models,
            the small shapes model that ships with netlens (where the right answer is known) and
            a torchvision ResNet-18, and shows how to read each picture.

            Every method is a method of `nl.NetLens` and also a plain function in
            `nl.attribution` with the same arguments: `(model, x, target, **options)`. Results
            are raw tensors; only the plotting functions scale them for display.
        '''),
        SETUP,
        SHAPES_INTRO,
        SHAPES_LOAD,
        HELPER,
        md('''
            ### Saliency

            The plain gradient of the target logit with respect to the input pixels (Simonyan et
            al., 2014). It is signed and has one value per colour channel; for display,
            `normalize_map` takes the largest absolute value over the channels and clips the top
            1% so that a few extreme pixels do not wash out the rest. Bright means "the score is
            sensitive here".

            Sensitivity is not the same as evidence. For the circle in the last row, the gradient
            is largest on the distractor ellipse, a shape not far from a circle: changing those
            pixels would change the circle score, even though the model's decision rests on the
            circle (the Grad-CAM and occlusion notebooks show it). The ground-truth mask makes
            such a mismatch visible.
        '''),
        code('''
            saliency = lens.saliency(x, y)     # target: the true class of each image
            print(saliency.shape, saliency.dtype)
            show_maps(x, {"saliency": saliency}, masks)
        '''),
        md('''
            ### Input × gradient

            The gradient multiplied by the input itself (Shrikumar et al., 2016): a first-order
            estimate of each pixel's contribution to the score, rather than of its sensitivity.
            Black pixels get zero whatever their gradient and dark ones are damped, so the same
            sensitivity shows less on a dark background than on a light one: a reminder that
            the map depends on where "zero" is.

            ### Guided backpropagation

            The gradient, except that at every ReLU only positive gradients are passed back
            (Springenberg et al., 2015). The result is sharper and cleaner, because it keeps
            only the paths that *increase* activations, but it is known to behave like an edge
            detector of the image rather than an explanation of the class. netlens applies the
            rule to every ReLU call, including functional `F.relu` calls and a ReLU module that
            is reused, as in this ResNet-style model.
        '''),
        code('''
            maps = {
                "saliency": saliency,
                "input × grad": lens.input_x_gradient(x, y),
                "guided backprop": lens.guided_backprop(x, y),
            }
            show_maps(x, maps, masks)
        '''),
        md('''
            ### Positive and negative saliency

            A gradient has a sign: positive where brightening a pixel raises the score, negative
            where it lowers it. `nl.plot.positive_negative_saliency` splits an attribution into
            the two parts, each scaled to `[0, 1]` per image and kept in colour, the way the
            original netlens showed them. Here the two parts of the guided-backprop map and of
            the plain gradient: guided backprop is mostly positive by construction, the plain
            gradient is not.
        '''),
        code('''
            panels, titles = [], []
            for name in ("saliency", "guided backprop"):
                pos, neg = nl.plot.positive_negative_saliency(maps[name])
                for i in range(2):
                    panels += [x[i], pos[i], neg[i]]
                    titles += [SHAPES_CLASSES[int(y[i])], f"{name} +", f"{name} −"]
            nl.plot.grid(panels, titles, ncols=6, mean=None, std=None, panel_size=1.7)
        '''),
        md('''
            ### SmoothGrad and its variants

            Gradients of ReLU networks jump from pixel to pixel. SmoothGrad (Smilkov et al.,
            2017) averages the gradient over `n` copies of the image with Gaussian noise of
            standard deviation `sigma` times the image's value range. Variants:

            - `variant="mean"`: the average gradient (signed);
            - `variant="squared"`: the average *squared* gradient (SmoothGrad²), all positive,
              which sharpens the strongest regions;
            - `variant="vargrad"`: the variance of the gradients over the noise;
            - `guided=True`: average guided-backprop gradients instead of plain ones.

            The noise comes from a `torch.Generator`, so a seeded generator makes the result
            reproducible; the global random state is never used. A small `n` is enough to see
            the effect; use 25-50 for final pictures.
        '''),
        code('''
            def noise(seed=0):
                return torch.Generator().manual_seed(seed)

            smooth = {
                "mean": lens.smooth_grad(x, y, n=12, sigma=0.15, generator=noise()),
                "squared": lens.smooth_grad(x, y, n=12, variant="squared", generator=noise()),
                "vargrad": lens.smooth_grad(x, y, n=12, variant="vargrad", generator=noise()),
                "guided": lens.smooth_grad(x, y, n=12, guided=True, generator=noise()),
            }
            show_maps(x, {"saliency": saliency, **smooth}, masks)
        '''),
        md('''
            ### Integrated gradients

            Integrated gradients (Sundararajan et al., 2017) add up the gradient along a straight
            path from a *baseline* image `b` to the input `x`, and multiply by `x - b`. The
            result has a bookkeeping property, *completeness*: the attributions sum to the score
            difference `f(x) - f(b)`. With `return_delta=True` netlens also returns the error of
            that sum, which tells you whether `steps` was enough.

            The baseline is the "absence of signal" each pixel is compared with, and it shapes
            the picture: `"zeros"` (black, the default), `"blur"` (a blurred copy of the image:
            only edges and details count) or `"uniform"` (noise within the image's range, drawn
            from `generator`). A number or a tensor works too.
        '''),
        code('''
            integrated = {}
            for baseline in ("zeros", "blur", "uniform"):
                attr, delta = lens.integrated_gradients(
                    x, y, steps=32, baseline=baseline, return_delta=True, generator=noise())
                integrated[f"IG, {baseline}"] = attr
                total = attr.sum(dim=(1, 2, 3))
                print(f"{baseline:>8s}: sum of attributions {np.round(total.tolist(), 2)}, "
                      f"completeness error {np.round(delta.tolist(), 3)}")
            show_maps(x, integrated, masks)
        '''),
        md('''
            The completeness error shrinks as the number of steps grows, though not smoothly: a
            ReLU network is piecewise linear, so the integrand has kinks that the quadrature
            rule (Gauss-Legendre by default) can straddle. If the error is a sizeable fraction of
            the sum, take more steps.
        '''),
        code('''
            for steps in (4, 8, 16, 32):
                _, delta = lens.integrated_gradients(x, y, steps=steps, return_delta=True)
                print(f"steps={steps:3d}: largest |error| {delta.abs().max():.4f}")
        '''),
        md('''
            ### The gradient of one channel of one layer

            `layer_channel_gradient` differentiates the mean activation of one channel of a
            hidden layer instead of a class score: which pixels would make that channel fire
            more? Layers are named as in PyTorch (`lens.fm.layer_names` lists them). Here, for
            each class, the channel of the last layer `layer3` that the classifier weighs most
            heavily for that class, one column per class, the same channels for every image.

            Such a channel need not be specific to its class: a channel can support "circle"
            because it detects round edges, and then it reacts to the ellipses as well. Reading
            a hidden channel takes more than one picture; the feature-visualization notebooks
            show what pattern excites a channel most.
        '''),
        code('''
            print(lens.fm.layer_names[:8], "...")
            channel_maps = {}
            for k, name in enumerate(SHAPES_CLASSES):
                channel = int(model.fc.weight[k].argmax())
                channel_maps[f"{name}: ch {channel}"] = lens.layer_channel_gradient(
                    x, "layer3", channel)
            show_maps(x, channel_maps, masks,
                      labels=[SHAPES_CLASSES[int(t)] for t in y])
        '''),
        IMAGENET_INTRO,
        PHOTO,
        md('''
            All gradient methods on the photo, in one figure. With random weights the plain
            gradients are close to noise (with the grid pattern of the strided convolutions).
            The two methods that multiply by the input, input × gradient and integrated
            gradients, still show the portrait: that structure comes from the image, not from
            anything the network knows, so a recognisable picture alone proves nothing.
        '''),
        code('''
            raw = example_photo(128)                 # (1, 3, 128, 128) in [0, 1]
            photo = nl.image.normalize(raw)          # ImageNet mean and std
            photo_maps = {
                "saliency": resnet_lens.saliency(photo, TARGET),
                "input × grad": resnet_lens.input_x_gradient(photo, TARGET),
                "guided backprop": resnet_lens.guided_backprop(photo, TARGET),
                "SmoothGrad": resnet_lens.smooth_grad(photo, TARGET, n=6, generator=noise()),
                "IG, blur": resnet_lens.integrated_gradients(photo, TARGET, steps=10,
                                                             baseline="blur"),
                "layer2 ch 5": resnet_lens.layer_channel_gradient(photo, "layer2", 5),
            }
            show_maps(photo, photo_maps, **IMAGENET)
        '''),
        md('''
            `nl.plot.show` is the quick look: each image beside its attribution blended over it.
        '''),
        code('''
            nl.plot.show(photo, photo_maps["guided backprop"], titles="guided backprop")
        '''),
        PRETRAINED_INTRO,
        pretrained_cell('''
            fig = show_maps(photo, {
                "saliency": net_lens.saliency(photo, target),
                "guided backprop": net_lens.guided_backprop(photo, target),
                "SmoothGrad": net_lens.smooth_grad(photo, target, n=25, generator=noise()),
                "IG, blur": net_lens.integrated_gradients(photo, target, baseline="blur"),
            }, **IMAGENET)
            display(fig)
        '''),
    ]


# ---------------------------------------------------------------------------------------------
# Visual-Grad_CAM.ipynb


def gradcam_notebook() -> list[nbformat.NotebookNode]:
    return [
        md('''
            # Class activation maps: Grad-CAM and its relatives

            A class activation map (CAM) looks at one layer of the network, usually the last one
            that still has a spatial layout, and asks which of its positions support the target
            class. It weighs each channel of that layer's activation `A` and adds the channels
            up: `map = relu(Σ_c w_c A_c)`. The methods differ only in how they choose the
            weights. The result is a coarse map, `(B, 1, H, W)` after upsampling to the input
            size, that says *where* rather than *which pixels*.

            This notebook compares the CAM methods of netlens on the shapes model that ships
            with netlens (where the object's mask is the right answer) and on a torchvision
            ResNet-18.
        '''),
        SETUP,
        SHAPES_INTRO,
        SHAPES_LOAD,
        HELPER,
        md('''
            ### Grad-CAM

            Grad-CAM (Selvaraju et al., 2017) weighs each channel by the average gradient of the
            target score over that channel's positions: channels whose increase would raise the
            score count positively. With `layer=None` netlens takes the last layer with a spatial
            output, here `layer3` (16×16 cells for a 64×64 image). `nl.plot.show` blends each map
            over its image.
        '''),
        code('''
            print("default layer:", lens.fm.last_spatial_layer())
            cam = lens.gradcam(x, y)                  # (B, 1, H, W), upsampled to the input
            titles = [SHAPES_CLASSES[int(t)] for t in y]
            nl.plot.show(x, cam, titles=titles, mean=None, std=None, ncols=4)
        '''),
        md('''
            `interpolate=False` returns the map at the layer's own resolution, before the
            bilinear upsampling; it shows how coarse the evidence really is. An earlier layer
            (`layer=` takes any name of `lens.fm.layer_names`) has smaller receptive fields and
            more local, less class-specific features: its map follows edges and colours more
            than objects.
        '''),
        code('''
            raw_cam = lens.gradcam(x, y, interpolate=False)
            print("layer3 map:", tuple(raw_cam.shape[-2:]), "→ upsampled:", tuple(cam.shape[-2:]))
            show_maps(x, {"layer3, 16×16": raw_cam, "upsampled": cam})
        '''),
        code('''
            by_layer = {name: lens.gradcam(x, y, layer=name) for name in ("layer3", "layer2",
                                                                          "layer1")}
            show_maps(x, by_layer, masks)
        '''),
        md('''
            ### The variants

            All of them share Grad-CAM's recipe and change the weights:

            - **HiResCAM** (Draelos & Carin, 2020) does not average the gradient over positions:
              it multiplies gradient and activation position by position, so a position counts
              only where the gradient itself is large there.
            - **Grad-CAM++** (Chattopadhay et al., 2018) averages only the positive gradients,
              each with its own coefficient derived from higher-order terms, which helps when
              several objects of the class are present.
            - **XGrad-CAM** (Fu et al., 2020) averages the gradient over positions weighted by
              the activation there (`Σ A·G / Σ A`) instead of uniformly.
            - **LayerCAM** (Jiang et al., 2021) multiplies activations by the positive part of the
              gradient position by position; it gives usable maps on earlier layers too.
            - **Eigen-CAM** (Muhammad & Yeasin, 2020) uses no gradient and no target: it projects
              the activations on their first principal component. It shows the dominant
              structure of the layer, the same map whatever class you ask about.
            - **Score-CAM** (Wang et al., 2020) uses no gradient either: each channel, upsampled
              and scaled to `[0, 1]`, masks the input, and the channel's weight comes from how
              much of the target score the masked image keeps. It costs one forward pass per
              channel (64 here, 512 for a ResNet-18's last layer).
            - **Guided Grad-CAM** multiplies Grad-CAM by guided backpropagation: pixel-sharp
              detail inside the region that Grad-CAM selects. It returns `(B, 3, H, W)`.
        '''),
        code('''
            cams = {
                "Grad-CAM": cam,
                "HiResCAM": lens.hirescam(x, y),
                "Grad-CAM++": lens.gradcam_pp(x, y),
                "XGrad-CAM": lens.xgradcam(x, y),
                "LayerCAM": lens.layercam(x, y),
                "Eigen-CAM": lens.eigencam(x, y),
                "Score-CAM": lens.scorecam(x, y),
                "Guided Grad-CAM": lens.guided_gradcam(x, y),
            }
            show_maps(x, cams, masks)
        '''),
        md('''
            Most variants agree closely on this model. Score-CAM stands out on the dark circle in
            the last row, where it lights up the background: its masks multiply the input, so
            the hidden part turns black, and an image that keeps only the background still shows
            a black circle on a light ground, which scores as a circle. Occlusion with a black
            baseline has the same weakness (see the occlusion notebook).

            Because the shapes come with masks, we can measure instead of eyeballing: the share of
            each map's mass (absolute values) that lies on the object, and on the distractor
            ellipse. The object covers only 3.5-8% of an image, so a map that ignores it would
            put a few percent there; the distractor has exactly the object's pixel count.
        '''),
        code('''
            def share(attr, region):
                mass = attr.abs().sum(dim=1, keepdim=True)
                return ((mass * region).sum(dim=(1, 2, 3)) / mass.sum(dim=(1, 2, 3))).mean()

            print(f"{'method':>16s}  on object  on distractor")
            for name, attr in cams.items():
                print(f"{name:>16s}  {share(attr, masks):9.0%}  "
                      f"{share(attr, batch.distractor_masks):13.0%}")
        '''),
        IMAGENET_INTRO,
        PHOTO,
        md('''
            At 128 px, ResNet-18's last spatial layer `layer4` is only 4×4 cells, so the default
            map is very coarse; `layer3` (8×8) and `layer2` (16×16) are finer. We compare the
            variants at `layer3`, which also halves Score-CAM's cost (256 channels instead of
            512). With random weights there is nothing to find in the photo; look instead at how
            differently the methods weigh the same activations.
        '''),
        code('''
            photo = nl.image.normalize(example_photo(128))
            print("default layer:", resnet_lens.fm.last_spatial_layer())
            layers = {name: resnet_lens.gradcam(photo, TARGET, layer=name)
                      for name in ("layer4", "layer3", "layer2")}
            show_maps(photo, layers, overlay=True, **IMAGENET)
        '''),
        code('''
            variants = ("gradcam", "hirescam", "gradcam_pp", "xgradcam", "layercam", "eigencam",
                        "scorecam", "guided_gradcam")
            photo_cams = {name: resnet_lens.attribute(name, photo, TARGET, layer="layer3")
                          for name in variants}
            show_maps(photo, photo_cams, overlay=True, **IMAGENET)
        '''),
        PRETRAINED_INTRO,
        pretrained_cell('''
            fig = show_maps(photo, {
                name: net_lens.attribute(name, photo, target)
                for name in ("gradcam", "hirescam", "gradcam_pp", "layercam", "eigencam",
                             "guided_gradcam")
            }, overlay=True, **IMAGENET)
            display(fig)
        '''),
    ]


# ---------------------------------------------------------------------------------------------
# occlusion.ipynb


def occlusion_notebook() -> list[nbformat.NotebookNode]:
    return [
        md('''
            # Occlusion

            Occlusion (Zeiler & Fergus, 2014) needs no gradient at all: slide a window over the
            image, replace what it covers by a baseline value, and record how much the target
            score drops. Each pixel gets the average drop of the windows that cover it, so the
            map `(B, 1, H, W)` reads directly as "hiding this region costs this much score";
            negative values mean that hiding the region *helps* the class.

            It is slow (one forward pass per window position) and coarse (nothing finer than
            the stride), but it tests the model's actual behaviour, which makes it a good
            reference for the faster methods. Three settings matter: `window` (what size of
            evidence can be hidden), `stride` (the resolution of the map) and `baseline` (what
            "hidden" looks like).
        '''),
        SETUP,
        SHAPES_INTRO,
        SHAPES_LOAD,
        HELPER,
        md('''
            ### Window, stride and baseline

            Three settings, named window/stride and baseline, changing one thing at a time. The
            baseline matters: black (`baseline=0.0`) on a light background does not remove
            information, it *adds* a dark square, a shape this model knows well, and the map gets
            confusing. A tensor baseline, here each image's mean colour `(B, 3, 1, 1)`, makes
            "hidden" mean "like the rest of the image". Then the window: 16 pixels hide a whole
            object (objects are about 12-20 pixels across), 8 pixels hide part of one; with stride 4
            the map is finer, at the price of 225 windows per image instead of 49.

            The figure shows the positive part of each map (`clamp(min=0)`): the regions whose
            hiding lowers the score.
        '''),
        code('''
            mean_colour = x.mean(dim=(2, 3), keepdim=True)        # (B, 3, 1, 1)
            settings = {
                "16/8, black": dict(window=16, stride=8, baseline=0.0),
                "16/8, mean colour": dict(window=16, stride=8, baseline=mean_colour),
                "8/4, mean colour": dict(window=8, stride=4, baseline=mean_colour),
            }
            occluded = {name: lens.occlusion(x, y, **options) for name, options in settings.items()}
            print(occluded["8/4, mean colour"].shape)
            show_maps(x, {name: attr.clamp(min=0) for name, attr in occluded.items()}, masks)
        '''),
        md('''
            Occlusion maps are signed. `nl.plot.normalize_map` with `reduce="sum"` keeps the sign
            (min-max scaled, so zero is not black but somewhere in between), and
            `nl.plot.positive_negative_saliency` separates the regions whose hiding hurts the
            class from those whose hiding helps it: hiding the distractor can *raise* the score,
            as if it competed with the object.
        '''),
        code('''
            attr = occluded["8/4, mean colour"]
            pos, neg = nl.plot.positive_negative_saliency(attr)
            panels, titles = [], []
            for i in range(len(x)):
                signed = nl.plot.normalize_map(attr[i], reduce="sum", clip=None)
                panels += [x[i], signed[0, 0].numpy(), pos[i, 0], neg[i, 0]]
                titles += [SHAPES_CLASSES[int(y[i])], "signed", "hiding hurts", "hiding helps"]
            nl.plot.grid(panels, titles, ncols=4, mean=None, std=None, cmap="inferno",
                         panel_size=1.7)
        '''),
        md('''
            ### A non-square image, two objects, two targets

            Occlusion (like every netlens method) takes any image size. Here two shapes images of
            different classes are put side by side into one 64×128 image, and hidden with
            16-pixel windows, stride 8 (7×15 windows). The target decides the answer: asked about
            one class, the map should point at that object, and at the other one for the other
            class.
        '''),
        code('''
            pair = nl.data.make_shapes(8, seed=31)
            left, right = 0, int((pair.labels != pair.labels[0]).nonzero()[0])
            # side by side along the width: one (1, 3, 64, 128) image
            wide = torch.cat([pair.images[left], pair.images[right]], dim=-1)[None]
            wide_mask = torch.cat([pair.masks[left], pair.masks[right]], dim=-1)[None]
            with torch.no_grad():
                probs = model(wide).softmax(1)[0]
            print(wide.shape, {name: round(float(p), 3) for name, p in zip(SHAPES_CLASSES, probs)})

            targets = [int(pair.labels[left]), int(pair.labels[right])]
            wide_maps = {f"target: {SHAPES_CLASSES[t]}":
                         lens.occlusion(wide, t, window=16, stride=8) for t in targets}
            show_maps(wide, {name: attr.clamp(min=0) for name, attr in wide_maps.items()},
                      wide_mask, overlay=True, panel_size=3.0)
        '''),
        md('''
            ### Occlusion next to Grad-CAM

            Grad-CAM needs one forward and one backward pass; occlusion with an 8-pixel window
            and stride 4 needs 225 forward passes per image, but it measures what the model
            actually does without the hidden pixels. Where the two agree, that is some
            reassurance about the cheap map on this model. The share of each map's positive
            mass on the object puts a number on it; Grad-CAM's map is upsampled from 16×16
            cells, so some of its mass spills around the object even when its peak is inside.
        '''),
        code('''
            compare = {
                "occlusion 8/4": occluded["8/4, mean colour"].clamp(min=0),
                "Grad-CAM": lens.gradcam(x, y),
                "Score-CAM": lens.scorecam(x, y),
            }
            show_maps(x, compare, masks, overlay=True)
        '''),
        code('''
            for name, attr in compare.items():
                mass = attr.clamp(min=0)   # CAMs are >= 0 already
                on_object = (mass * masks).sum(dim=(1, 2, 3)) / mass.sum(dim=(1, 2, 3))
                print(f"{name:>14s}: {on_object.mean():.0%} of the positive mass on the object")
        '''),
        IMAGENET_INTRO,
        PHOTO,
        md('''
            A portrait-format input, 150×128 (height × width, the photo's own aspect ratio), with
            ImageNet normalization. A 32-pixel window with stride 16 costs 9×7 = 63 forward
            passes, a 64-pixel window with stride 32 only 4×3 = 12, for a much coarser map.
            `baseline=0.0` on a normalized image is ImageNet's mean colour, not black. Again,
            with random weights the maps say nothing about uniforms; compare where they agree
            with Grad-CAM.
        '''),
        code('''
            photo = nl.image.normalize(example_photo((150, 128)))
            photo_maps = {
                "occlusion 32/16": resnet_lens.occlusion(photo, TARGET, window=32, stride=16),
                "occlusion 64/32": resnet_lens.occlusion(photo, TARGET, window=64, stride=32),
                "Grad-CAM layer3": resnet_lens.gradcam(photo, TARGET, layer="layer3"),
            }
            print(photo.shape, photo_maps["occlusion 32/16"].shape)
            positive = {name: attr.clamp(min=0) for name, attr in photo_maps.items()}
            show_maps(photo, positive, overlay=True, **IMAGENET)
        '''),
        PRETRAINED_INTRO,
        pretrained_cell('''
            fig = show_maps(photo, {
                "occlusion 32/16": net_lens.occlusion(photo, target, window=32,
                                                      stride=16).clamp(min=0),
                "occlusion 64/32": net_lens.occlusion(photo, target, window=64,
                                                      stride=32).clamp(min=0),
                "Grad-CAM": net_lens.gradcam(photo, target),
            }, overlay=True, **IMAGENET)
            display(fig)
        '''),
    ]


NOTEBOOKS = {
    "Visual-Gradient_backprop.ipynb": gradient_notebook,
    "Visual-Grad_CAM.ipynb": gradcam_notebook,
    "occlusion.ipynb": occlusion_notebook,
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        print("wrote", write(name, cells()))


if __name__ == "__main__":
    main()
