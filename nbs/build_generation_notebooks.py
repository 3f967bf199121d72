"""Writes the image-generation example notebooks in ``nbs/examples/``, without outputs.

    python nbs/build_generation_notebooks.py    # rewrites the two notebooks below

- ``Visual-Generation.ipynb``: :class:`netlens.NetDreamer` (channel and class visualization,
  deep dream, feature inversion);
- ``Visual-Generation_with_OptVis.ipynb``: :class:`netlens.OptVis` and its objectives,
  parameterizations and callbacks.

The notebooks are the product; this script keeps their shared cells (set-up, the example photo,
the pretrained path) identical and gives fixed cell ids, so rewriting a notebook that did not
change gives the same file. ``tests/test_notebooks.py`` executes every notebook in
``nbs/examples/``. Each one is sized to run in well under a minute on two CPU cores.
"""

from __future__ import annotations

import nbformat
from _nbtools import code, md, write  # nbs/ is the script's folder

# ---------------------------------------------------------------------------------------------
# cells shared by the two notebooks

SETUP = code('''
    %matplotlib inline
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    import torchvision
    from IPython.display import display

    import netlens as nl
    from netlens import objectives
    from netlens.data import SHAPES_CLASSES
    from netlens.optvis import ImageParam, RawParam


    def seed(n):
        """A fresh, seeded random generator: the start image and the random transforms of a run
        are drawn from it, so the same seed gives the same picture. The global RNG is not used."""
        return torch.Generator().manual_seed(n)


    def predict(model, images):
        """The shapes model's (class name, probability) for each image of a batch."""
        with torch.no_grad():
            p = model(images).softmax(1)
        return [(SHAPES_CLASSES[int(k)], float(v)) for v, k in zip(*p.max(1))]
''')

SHAPES_MODEL = code('''
    model = nl.zoo.shapes_model()      # ships with netlens: no download
    print(nl.FlatModel(model).layer_names)
''')

PHOTO = code('''
    def example_photo(size):
        """Grace Hopper as a raw [0, 1] tensor (1, 3, H, W), or a drawn image without her."""
        image, _ = nl.data.example_photo(size)  # a drawn image where the photo is missing
        return image
''')

RESNET = code('''
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().eval()   # random init: nothing is downloaded
''')

PRETRAINED_INTRO = md('''
    ## With pretrained weights

    Everything above runs on any classifier. With internet access, set `PRETRAINED = True` to
    download torchvision's GoogLeNet ImageNet weights (about 50 MB, once, into torch's cache) and
    run the cell: the same calls then show what a trained ImageNet network has learned. It is off
    by default so that the notebook runs anywhere, tests included; at 224 pixels and a few
    hundred steps it takes minutes on a CPU. On a GPU, move the model with `.to("cuda")`: the
    generated images are created on the model's device, and images you pass in (deep dream,
    inversion) must be moved there too.

    GoogLeNet's mixed layers are named `inception3a` ... `inception5b`; its ImageNet input
    normalization is applied for you. A few ImageNet class ids: 130 flamingo, 309 bee,
    945 bell pepper.
''')


# ---------------------------------------------------------------------------------------------
# Visual-Generation.ipynb


def dreamer_notebook() -> list[nbformat.NotebookNode]:
    return [
        md('''
            # Generating images from a model: `NetDreamer`

            Attribution methods explain a decision about an image you already have. The
            techniques here go the other way: they *make* an image by gradient ascent on the
            pixels, to ask the network what it responds to. `nl.NetDreamer(model)` bundles four
            of them:

            - `channel_visualization(layer, c)`: the picture that drives one channel of a layer
              as high as possible;
            - `class_visualization(c)`: the picture that drives one class score up;
            - `deep_dream(image, layer, channel=None)`: start from your image and exaggerate
              whatever a layer (or one channel) already sees in it;
            - `inverted_image(image, layer)`: start from noise and look for a picture whose
              features at a layer are those of your image: what the layer keeps, and what it
              throws away.

            Images go in and come out as `(B, 3, H, W)` tensors with values in `[0, 1]`. The
            model's own input normalization (ImageNet's mean and std for torchvision models,
            none for the shapes model) is applied inside, so never pass normalized images.
            Every method takes a `generator` for its randomness and `progress=False` to hide the
            progress bar. The sizes and step counts are kept small so the notebook runs in
            seconds on a CPU; for a final picture use 128-224 pixels and 256 steps or more.

            `NetDreamer` is a thin layer over `nl.OptVis`; the companion notebook
            `Visual-Generation_with_OptVis.ipynb` shows the machinery underneath.
        '''),
        SETUP,
        md('''
            ## The shapes model

            `nl.zoo.shapes_model()` is the small ResNet that ships with netlens, trained on the
            synthetic shapes of `nl.data.make_shapes`: one circle, square, triangle or plus per
            image, plus an elongated ellipse that carries no information about the class. Its
            layers have PyTorch's names: `layer1` ... `layer3` are its residual stages and `fc`
            the classifier.
        '''),
        SHAPES_MODEL,
        code('''
            dreamer = nl.NetDreamer(model)   # the model itself is never changed
        '''),
        md('''
            ## Channel visualization

            Which channels should we look at? The classifier reads `layer3` through a global
            average and one linear layer, so the channel with the largest weight for a class is
            that class's strongest witness. Below, one image per class for that channel. The
            optimization starts from faint random noise built in Fourier space and applies small
            random shifts, zooms and rotations at every step, so only patterns that survive
            those changes grow: the picture shows a *texture* of what the channel likes, repeated
            wherever it fits.
        '''),
        code('''
            class_channels = model.fc.weight.argmax(1).tolist()   # one layer3 channel per class
            channel_images = torch.cat([
                dreamer.channel_visualization("layer3", c, size=64, steps=64, generator=seed(c),
                                              progress=False)
                for c in class_channels
            ])
            titles = [f"layer3 ch {c}\\n({name})"
                      for c, name in zip(class_channels, SHAPES_CLASSES)]
            nl.plot.grid(channel_images, titles, mean=None, std=None, panel_size=2)
        '''),
        md('''
            These are textures, not drawings of a whole shape: a channel of `layer3` sees a
            patch of about a third of the image and responds to local evidence, so the
            optimized image repeats that evidence wherever it fits. The square and triangle
            channels fill only part of the frame: they were silent on the random start image,
            where a ReLU passes no gradient at all. For the first steps netlens lets a little
            gradient through such ReLUs so that the optimization can get going (`OptVis`'s
            `redirect_steps`), and from there the pattern spreads.

            ## Class visualization

            The same, for the score (logit) of each class. The model is asked to classify each
            result; if the image is a faithful "prototype" of the class, it wins by a wide margin.
        '''),
        code('''
            class_images = torch.cat([
                dreamer.class_visualization(c, size=64, steps=64, generator=seed(c),
                                            progress=False)
                for c in range(len(SHAPES_CLASSES))
            ])
            predictions = predict(model, class_images)
            for target, (name, p) in zip(SHAPES_CLASSES, predictions):
                print(f"optimized for {target:>8s}: the model says {name} (p = {p:.3f})")
            nl.plot.grid(class_images, [f"class {name}" for name in SHAPES_CLASSES],
                         mean=None, std=None, panel_size=2)
        '''),
        md('''
            The prediction is right for every class with near certainty, though no image looks
            like a clean drawing of the shape: the model has to be confident, not the viewer.
            Class images are a tool to find what a model relies on, for instance a background
            texture that correlates with the class in the training data.

            ## Deep dream

            Deep dream starts from a real image instead of noise, and raises the *squared*
            activation of a whole layer: whatever the layer already responds to, positively or
            negatively, is amplified. It works coarse to fine: the image is first shrunk
            (`octaves` scales, each `octave_scale` times smaller than the next), dreamed for
            `steps` steps, and the detail it gained is carried up to the next scale. Each step
            moves the pixels by about `lr` in the direction of the gradient, after a random shift
            of up to `jitter_px` pixels.
        '''),
        code('''
            shapes = nl.data.make_shapes(3, size=64, seed=2027)   # the model's training size
            dreamed = dreamer.deep_dream(shapes.images, "layer2", octaves=3, steps=10,
                                         generator=seed(0), progress=False)
            nl.plot.grid(torch.cat([shapes.images, dreamed]),
                         [SHAPES_CLASSES[int(k)] for k in shapes.labels] + ["dream, layer2"] * 3,
                         ncols=3, mean=None, std=None, panel_size=2)
        '''),
        md('''
            ### Dreaming one channel

            With `channel=c` deep dream raises one channel's mean activation instead. Here we take
            the "plus" channel found above and dream it into the same three images, and ask the
            model before and after. If the prediction moves to "plus", the channel does not
            merely correlate with that class: raising it is enough to change the decision.
        '''),
        code('''
            plus_channel = class_channels[SHAPES_CLASSES.index("plus")]
            dreamed_plus = dreamer.deep_dream(shapes.images, "layer3", plus_channel, octaves=3,
                                              steps=15, generator=seed(0), progress=False)
            before, after = predict(model, shapes.images), predict(model, dreamed_plus)
            for (a, pa), (b, pb) in zip(before, after):
                print(f"before: {a:>8s} ({pa:.2f})   after: {b:>8s} ({pb:.2f})")
            nl.plot.grid(torch.cat([shapes.images, dreamed_plus]),
                         [f"before: {a}" for a, _ in before] + [f"after: {b}" for b, _ in after],
                         ncols=3, mean=None, std=None, panel_size=2)
        '''),
        md('''
            ### On a photo, with a torchvision model

            The same call works on any torchvision-style classifier. No weights can be downloaded
            where this notebook is tested, so this ResNet-18 keeps its (seeded) random
            initialization; the last section shows the pretrained path. The photo is Grace
            Hopper from matplotlib's sample data (public domain), loaded with
            `mean=None, std=None` so that it stays in `[0, 1]`; if the file is missing, a drawn
            image stands in.

            A random network has learned nothing to amplify, and it shows: dreaming saturates the
            colours and sprinkles pixel-scale noise over the whole photo, much the same at every
            layer. Compare with the pretrained cell at the end, where a trained network paints
            the patterns it has learned into the picture instead.
        '''),
        PHOTO,
        RESNET,
        code('''
            photo = example_photo(128)                   # (1, 3, 128, 128) in [0, 1]
            resnet_dreamer = nl.NetDreamer(resnet)       # ImageNet normalization applied inside
            photo_dreams = [resnet_dreamer.deep_dream(photo, layer, octaves=3, steps=10,
                                                      generator=seed(0), progress=False)
                            for layer in ("layer2", "layer3")]
            nl.plot.grid(torch.cat([photo, *photo_dreams]),
                         ["photo", "dream, layer2", "dream, layer3"],
                         mean=None, std=None, panel_size=2.2)
        '''),
        md('''
            ## Inverting features

            `inverted_image(image, layer)` starts from random noise and minimizes the distance
            between its features at `layer` and the features of `image`, with two priors that
            keep the picture natural (a penalty on total variation, against pixel noise, and one
            on extreme pixel values). What comes back is what the layer *remembers* about the
            image. The shapes model already forgets the exact colour of the object at `layer1`
            (a property its task never needed); at `layer3` the outline softens too, but the
            kind of shape and its position survive: that is what the classifier reads.
        '''),
        code('''
            original = shapes.images[:2]
            inverted = {layer: dreamer.inverted_image(original, layer, steps=96, generator=seed(1),
                                                      progress=False)
                        for layer in ("layer1", "layer3")}
            panels, titles = [], []
            for i in range(len(original)):
                panels += [original[i], inverted["layer1"][i], inverted["layer3"][i]]
                titles += ["original", "from layer1", "from layer3"]
            nl.plot.grid(panels, titles, ncols=3, mean=None, std=None, panel_size=2)
        '''),
        md('''
            On the photo and the random ResNet-18, `layer1` (after two downsamplings) still
            holds a recognisable portrait: random convolutions preserve information, and a
            feature inversion measures information, not meaning. Its two priors matter here:
            with the default `tv_weight=0.05` the result is grainy; a larger weight trades detail
            for smoothness. (Deeper layers of a *random* network give mostly noise at this
            budget.)
        '''),
        code('''
            small_photo = example_photo(96)
            photo_inverted = [resnet_dreamer.inverted_image(small_photo, "layer1", steps=96,
                                                            tv_weight=w, generator=seed(1),
                                                            progress=False)
                              for w in (0.05, 0.5)]
            nl.plot.grid(torch.cat([small_photo, *photo_inverted]),
                         ["photo", "layer1, tv_weight=0.05", "layer1, tv_weight=0.5"],
                         mean=None, std=None, panel_size=2.2)
        '''),
        PRETRAINED_INTRO,
        code('''
            PRETRAINED = False   # True downloads torchvision's GoogLeNet ImageNet weights

            if PRETRAINED:
                net = torchvision.models.googlenet(weights="DEFAULT").eval()
                net_dreamer = nl.NetDreamer(net)
                big_photo = example_photo(224)
                pictures = {
                    "dream, inception4c": net_dreamer.deep_dream(
                        big_photo, "inception4c", octaves=4, steps=10, generator=seed(0)),
                    "channel inception4a:97": net_dreamer.channel_visualization(
                        "inception4a", 97, size=224, steps=256, generator=seed(0)),
                    "class 130 (flamingo)": net_dreamer.class_visualization(
                        130, size=224, steps=256, generator=seed(0)),
                    "inverted, inception3b": net_dreamer.inverted_image(
                        big_photo, "inception3b", steps=256, generator=seed(0)),
                }
                display(nl.plot.grid(torch.cat(list(pictures.values())), list(pictures),
                                     mean=None, std=None, panel_size=3))
        '''),
    ]


# ---------------------------------------------------------------------------------------------
# Visual-Generation_with_OptVis.ipynb


def optvis_notebook() -> list[nbformat.NotebookNode]:
    return [
        md('''
            # Feature visualization with `OptVis`

            `nl.OptVis` is the engine under `NetDreamer`, and the place to go when you want to
            choose what is optimized and how. One run has four parts:

            1. a **parameterization** of the image (`ImageParam`, `RawParam`): the tensors the
               optimizer changes and the function that turns them into a `[0, 1]` image;
            2. **transforms**: small random shifts, zooms and rotations applied at every step,
               so that only patterns that survive them can grow;
            3. an **objective**: a differentiable *score to maximize*, read from the model's
               layers by name (`objectives.channel`, `neuron`, `class_logit`, ...);
            4. an **optimizer** (Adam by default) that climbs the objective.

            `OptVis(model, objective, param=None, transforms=None, optimizer=None, ...)` builds
            the run; `.vis(thresholds=(256,), callback=None, progress=None)` executes it and
            returns one image batch per threshold. The forward pass stops right after the
            deepest layer the objective reads, and the model is left exactly as it was.

            Sizes and step counts are small here so the notebook runs in seconds on a CPU; for a
            final picture use 128-224 pixels and 256 steps or more.
        '''),
        SETUP,
        md('''
            ## The shapes model

            The small ResNet that ships with netlens, trained on the synthetic shapes of
            `nl.data.make_shapes` (circle, square, triangle, plus). It takes raw `[0, 1]` pixels;
            `OptVis` finds that out by itself (`nl.optvis.model_normalization`), and applies
            ImageNet's normalization to torchvision models.
        '''),
        SHAPES_MODEL,
        md('''
            ## Class visualization: `objectives.class_logit`

            `class_logit(c)` is the model's output for class `c` (the logit, before the
            softmax). It needs the whole forward pass. `size` and `generator` build the default
            parameterization, `ImageParam(size, fft=True, decorrelate=True)`.
        '''),
        code('''
            class_images = []
            for c, name in enumerate(SHAPES_CLASSES):
                vis = nl.OptVis(model, objectives.class_logit(c), size=64, generator=seed(c))
                class_images.append(vis.vis((48,), progress=False)[-1])
                print(f"{name:>8s}: logit {vis.history[0]:6.2f} -> {vis.history[-1]:6.2f};",
                      "the model predicts %s (p = %.3f)" % predict(model, class_images[-1])[0])
            nl.plot.grid(torch.cat(class_images), list(SHAPES_CLASSES), mean=None, std=None,
                         panel_size=2)
        '''),
        md('''
            `vis.history` holds the objective's value at every step. It is measured on the
            randomly transformed image the step used, so it is a little noisy; `vis.value()`
            gives the value on the current image itself.

            ## Channel visualization: `objectives.channel`

            `channel(layer, c)` is the mean activation of channel `c` of a layer over all
            positions. Layers are named as `nl.FlatModel(model).layer_names` lists them. We look
            at two channels of `layer3`: the one the classifier weighs most for "circle", and
            channel 24.
        '''),
        code('''
            circle = int(model.fc.weight[SHAPES_CLASSES.index("circle")].argmax())
            a, b = circle, 24
            images = {}
            for c in (a, b):
                vis = nl.OptVis(model, objectives.channel("layer3", c), size=64, generator=seed(0))
                images[f"channel {c}"] = vis.vis((64,), progress=False)[-1]
                print(f"channel {c}: {vis.history[0]:.2f} -> {vis.value():.2f}")
            nl.plot.grid(torch.cat(list(images.values())), list(images), mean=None, std=None,
                         panel_size=2)
        '''),
        md('''
            ## One unit: `objectives.neuron`

            `neuron(layer, c, y, x)` is channel `c` at one position `(y, x)` of the layer's map
            (by default the centre). A unit only sees its receptive field, so only that part of
            the image changes; the rest stays the grey of the start image. `layer3`'s map is a
            quarter of the input size, 16x16 here.
        '''),
        code('''
            neurons = {
                f"neuron({a}), centre": objectives.neuron("layer3", a),
                f"neuron({a}, y=3, x=3)": objectives.neuron("layer3", a, 3, 3),
            }
            neuron_images = [nl.OptVis(model, o, size=64, generator=seed(0)).vis(
                (48,), progress=False)[-1] for o in neurons.values()]
            nl.plot.grid(torch.cat([images[f"channel {a}"], *neuron_images]),
                         [f"channel {a}", *neurons], mean=None, std=None, panel_size=2)
        '''),
        md('''
            ## Composing objectives

            Objectives are small values that combine with `+`, `-`, and multiplication or
            division by a number; the result prints as a formula. Two uses:

            - **several goals at once**: `channel(a) + channel(b)` looks for an image that
              excites both channels;
            - **priors on the image**: `total_variation()` measures how much neighbouring pixels
              differ. Because an objective is maximized, a penalty is *subtracted*, with a weight
              that sets its strength. Weights are relative to the other terms: a channel's mean
              activation here is about 10, the total variation of an image about 0.1, so a weight
              of `1e-3` changes nothing visible, and 10 smooths the picture.
        '''),
        code('''
            both = objectives.channel("layer3", a) + objectives.channel("layer3", b)
            smooth = {w: objectives.channel("layer3", a) - w * objectives.total_variation()
                      for w in (1e-3, 10.0)}
            print(both)
            print(smooth[10.0])
            combined = {"a + b": both, **{f"a - {w:g} * TV": o for w, o in smooth.items()}}
            combined_images = [nl.OptVis(model, o, size=64, generator=seed(0)).vis(
                (64,), progress=False)[-1] for o in combined.values()]
            nl.plot.grid(torch.cat([images[f"channel {a}"], images[f"channel {b}"],
                                    *combined_images]),
                         [f"a = channel {a}", f"b = channel {b}", *combined], ncols=5,
                         mean=None, std=None, panel_size=2)
        '''),
        md('''
            ## A batch of different images: `objectives.diversity`

            `ImageParam(size, batch=4)` optimizes four images at once, each from its own random
            start. For a single channel they tend to come out as variations on one theme.
            `diversity(layer)` measures how different the images' *styles* are at a layer (minus
            the average similarity of their Gram matrices, so it grows as they differ, up to 0).
            Like every objective it is maximized, so it is **added**, with a weight.

            The weight needs care. The channel term is a mean over the batch, so if diversity
            is weighted too much, the cheapest way to be "different" is for one image to give
            up on the channel and go blank. We print each image's channel activation to check
            that all four still excite it. Here diversity is measured at the earlier `layer1`,
            whose textures vary more.
        '''),
        code('''
            def channel_means(images, layer, c):
                fm = nl.FlatModel(model)
                with torch.no_grad(), fm.record(layer) as rec:
                    fm(images)
                return rec.activations[layer][:, c].mean(dim=(1, 2))

            batches = {}
            for w in (0.0, 15.0):
                objective = objectives.channel("layer3", a) + w * objectives.diversity("layer1")
                param = ImageParam(64, batch=4, generator=seed(1))
                vis = nl.OptVis(model, objective, param, generator=seed(0))
                batches[w] = vis.vis((64,), progress=False)[-1]
                means = channel_means(batches[w], "layer3", a)
                print(f"w = {w:4g}: channel {a} per image {np.round(means.tolist(), 1)}")
            nl.plot.grid(torch.cat(list(batches.values())),
                         [f"w = {w:g}" for w in batches for _ in range(4)], ncols=4,
                         mean=None, std=None, panel_size=1.8)
        '''),
        md('''
            ## One objective per image: `batch=i`

            Every activation objective takes `batch=i` to read only image `i` of the batch. A
            sum of such objectives gives each image its own goal, and one run of a batch is
            cheaper than separate runs: here the four class channels of the classifier in one
            go. Each channel is high in its own image only.
        '''),
        code('''
            class_channels = model.fc.weight.argmax(1).tolist()
            per_image = sum(objectives.channel("layer3", c, batch=i)
                            for i, c in enumerate(class_channels))
            print(per_image)
            vis = nl.OptVis(model, per_image, ImageParam(64, batch=4, generator=seed(2)),
                            generator=seed(0))
            per_image_images = vis.vis((64,), progress=False)[-1]
            for i, c in enumerate(class_channels):
                means = channel_means(per_image_images, "layer3", c)
                print(f"image {i}: channel {c} = {means[i]:.1f}, "
                      f"in the other images {np.round(means[torch.arange(4) != i].tolist(), 1)}")
            nl.plot.grid(per_image_images,
                         [f"ch {c} ({name})" for c, name in zip(class_channels, SHAPES_CLASSES)],
                         mean=None, std=None, panel_size=2)
        '''),
        md('''
            ## Watching the optimization: thresholds

            `vis(thresholds=(...))` takes a picture at each of the given step counts and returns
            them all, in one run: here after 4, 8, 16, 32 and 64 steps. The first steps find the
            layout, the later ones sharpen and saturate it.
        '''),
        code('''
            vis = nl.OptVis(model, objectives.channel("layer3", a), size=64, generator=seed(0))
            thresholds = (4, 8, 16, 32, 64)
            progress_images = vis.vis(thresholds, progress=False)
            nl.plot.grid(torch.cat(progress_images), [f"step {s}" for s in thresholds], ncols=5,
                         mean=None, std=None, panel_size=1.8)
        '''),
        md('''
            ## Callbacks

            `callback=` is called after every step: either a function `f(vis, step, value)` or an
            `nl.optvis.Callback` subclass with `on_begin`, `on_step` and `on_end`. It can log,
            plot, save pictures, or stop the run early by raising `KeyboardInterrupt` (the
            images so far are returned, with a warning). This one records the value of each
            step, and every 8 steps also `vis.value()`, the objective on the untransformed
            image, which is higher than what the randomly shifted, zoomed and rotated copies
            score.
        '''),
        code('''
            class Recorder(nl.optvis.Callback):
                def on_begin(self, vis):
                    self.steps, self.values, self.clean = [], [], []

                def on_step(self, vis, step, value):
                    self.steps.append(step)
                    self.values.append(value)
                    if step % 8 == 0:
                        self.clean.append((step, vis.value()))

            recorder = Recorder()
            objective = objectives.channel("layer3", a) - 1.0 * objectives.total_variation()
            vis = nl.OptVis(model, objective, size=64, generator=seed(0))
            vis.vis((64,), callback=recorder, progress=False)

            fig, ax = plt.subplots(figsize=(5, 3))
            ax.plot(recorder.steps, recorder.values, label="each step (transformed image)")
            ax.plot(*zip(*recorder.clean), "o", label="vis.value() (the image itself)")
            ax.set(xlabel="step", ylabel="objective", title=str(objective))
            ax.legend()
            plt.show()
        '''),
        md('''
            ## Parameterizations

            How the image is represented changes what gradient ascent finds, even with the same
            objective, model and steps:

            - `ImageParam(size)` (the default) optimizes a Fourier spectrum scaled so that low
              frequencies move faster (`fft=True`), and mixes the colour channels the way
              natural images correlate them (`decorrelate=True`). The picture builds up from
              coarse to fine and its colours stay plausible.
            - `fft=False` optimizes each pixel's value (through a sigmoid) independently;
              `decorrelate=False` treats red, green and blue independently.
            - `RawParam(image)` optimizes the pixels themselves, starting from any image you
              give it, here a flat grey with a little noise.

            The curves (from `vis.history`) show that the three `ImageParam` variants raise the
            channel about equally fast, so the difference is in *what* they find. Optimized pixel
            by pixel, the image settles into a bland stripe pattern that scores as well as the
            others and tells us little; raw pixels climb slower and end noisy and saturated.
            The Fourier parameterization builds up the picture from coarse to fine, and
            decorrelated colours keep it from drifting to one hue.
        '''),
        code('''
            grey = (0.5 + 0.02 * torch.randn(1, 3, 64, 64, generator=seed(5))).clamp(0, 1)
            params = {
                "fft + decorrelate": ImageParam(64, generator=seed(1)),
                "fft only": ImageParam(64, decorrelate=False, generator=seed(1)),
                "pixels": ImageParam(64, fft=False, decorrelate=False, generator=seed(1)),
                "RawParam(grey)": RawParam(grey),
            }
            param_images, curves = [], {}
            for name, param in params.items():
                vis = nl.OptVis(model, objectives.channel("layer3", a), param, generator=seed(0))
                param_images.append(vis.vis((64,), progress=False)[-1])
                curves[name] = vis.history
            display(nl.plot.grid(torch.cat(param_images), list(params), mean=None, std=None,
                                 panel_size=2))

            fig, ax = plt.subplots(figsize=(5, 3))
            for name, history in curves.items():
                ax.plot(range(1, len(history) + 1), history, label=name)
            ax.set(xlabel="step", ylabel=f"channel {a}")
            ax.legend(fontsize="small")
            plt.show()
        '''),
        md('''
            ## A torchvision model

            Nothing above is specific to the shapes model. On a torchvision ResNet-18, layers
            are named as in PyTorch (`layer3`, `layer4.1.conv2`, ...), and ImageNet's input
            normalization is applied inside the loop. With random weights (nothing can be
            downloaded where this notebook is tested) a channel responds to nothing in
            particular, so its picture is an unstructured, cloudy texture, and some channels
            barely move; with trained weights the same code shows learned features (next
            section).
        '''),
        RESNET,
        code('''
            resnet_images = []
            for c in (0, 7):
                vis = nl.OptVis(resnet, objectives.channel("layer3", c), size=64,
                                generator=seed(0))
                resnet_images.append(vis.vis((32,), progress=False)[-1])
                print(f"resnet18 layer3 channel {c}: {vis.history[0]:.3f} -> {vis.value():.3f}")
            nl.plot.grid(torch.cat(resnet_images), ["layer3 ch 0", "layer3 ch 7"], mean=None,
                         std=None, panel_size=2)
        '''),
        PRETRAINED_INTRO,
        code('''
            PRETRAINED = False   # True downloads torchvision's GoogLeNet ImageNet weights

            if PRETRAINED:
                net = torchvision.models.googlenet(weights="DEFAULT").eval()
                runs = {
                    "inception4a ch 97": objectives.channel("inception4a", 97),
                    "inception4c ch 12, neuron": objectives.neuron("inception4c", 12),
                    "bell pepper (945)": objectives.class_logit(945)
                                         - 0.5 * objectives.total_variation(),
                }
                pictures = [nl.OptVis(net, o, size=224, generator=seed(0)).vis((256,))[-1]
                            for o in runs.values()]
                # the diversity weight depends on the model and layers: check that every image
                # still excites the channel (see the diversity section above)
                varied = objectives.channel("inception4a", 97) \\
                    + 10 * objectives.diversity("inception3b")
                diverse = nl.OptVis(net, varied, ImageParam(224, batch=4, generator=seed(1)),
                                    generator=seed(0)).vis((256,))[-1]
                display(nl.plot.grid(torch.cat(pictures), list(runs), mean=None, std=None,
                                     panel_size=3))
                display(nl.plot.grid(diverse, mean=None, std=None, panel_size=3))
        '''),
    ]


NOTEBOOKS = {
    "Visual-Generation.ipynb": dreamer_notebook,
    "Visual-Generation_with_OptVis.ipynb": optvis_notebook,
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        print("wrote", write(name, cells()))


if __name__ == "__main__":
    main()
