"""The model families tilegraph is checked on, built from their authors' code.

Every factory returns a `ModelCase`: an nn.Module with random weights (nothing is
downloaded), example inputs, and a loss wrapper for training. torchvision and Hugging Face
transformers are imported lazily, so `import tilegraph` does not need them.

`size` is "small" (the CI tier: a few layers, tiny images / sequences) or "full" (the
published configuration at a modest input size). The coverage tool, the parity tests and
the benchmark suite all build their models here.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class ModelCase:
    name: str
    model: torch.nn.Module                 # returns the model's own outputs
    inputs: tuple                          # example inputs for one batch
    train_model: torch.nn.Module = None    # model wrapped to return (outputs..., loss)
    train_inputs: tuple = None
    notes: str = ""
    extra: dict = field(default_factory=dict)


class WithLoss(torch.nn.Module):
    """Wraps `model` so that forward(*inputs, target) returns (output, loss)."""

    def __init__(self, model, loss_fn: Callable):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *args):
        *inputs, target = args
        out = self.model(*inputs)
        return out, self.loss_fn(out, target)


def _seeded(seed):
    torch.manual_seed(seed)


# ---- vision (torchvision) ---------------------------------------------------------------
def _vision(name, builder, size, batch, resolution, **kwargs):
    """The published architecture; "small" only shrinks the classifier to 10 classes.
    `resolution` defaults to 64 (small) / 128 (full): at 32x32 the last stage of a ResNet is
    1x1, so batch norm normalizes over `batch` values only, and its gradient becomes so
    ill-conditioned that eager f32 itself departs from f64 by >10% within 3 SGD steps."""
    import torchvision.models as tvm
    _seeded(0)
    classes = 10 if size == "small" else 1000
    res = resolution or (64 if size == "small" else 128)
    model = builder(tvm)(num_classes=classes, **kwargs)
    x = torch.randn(batch, 3, res, res)
    y = torch.randint(0, classes, (batch,))
    return ModelCase(name, model, (x,), WithLoss(model, F.cross_entropy), (x, y))


def resnet50(size="small", batch=4, resolution=None, **kwargs):
    return _vision("resnet50", lambda tvm: tvm.resnet50, size, batch, resolution, **kwargs)


def resnext50_32x4d(size="small", batch=4, resolution=None, **kwargs):
    return _vision("resnext50_32x4d", lambda tvm: tvm.resnext50_32x4d, size, batch, resolution, **kwargs)


def efficientnet_b0(size="small", batch=4, resolution=None, **kwargs):
    return _vision("efficientnet_b0", lambda tvm: tvm.efficientnet_b0, size, batch, resolution, **kwargs)


def resnet18(size="small", batch=4, resolution=None, **kwargs):
    return _vision("resnet18", lambda tvm: tvm.resnet18, size, batch, resolution, **kwargs)


# ---- language (Hugging Face BERT) -------------------------------------------------------
BERT_CONFIGS = {
    "small": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=128, vocab_size=512, max_position_embeddings=64),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, vocab_size=30522, max_position_embeddings=512),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, vocab_size=30522, max_position_embeddings=512),
}


class BertPretrainingLoss(torch.nn.Module):
    """BertForPreTraining returning (prediction_logits, seq_relationship_logits, loss): the
    masked-LM loss (labels -100 are ignored) plus next-sentence loss, as HF computes it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask, labels, next_sentence_label):
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                         attention_mask=attention_mask, labels=labels,
                         next_sentence_label=next_sentence_label)
        return out.prediction_logits, out.seq_relationship_logits, out.loss


class BertInference(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                         attention_mask=attention_mask)
        return out.prediction_logits, out.seq_relationship_logits


def bert_pretraining(size="small", batch=2, seq=16):
    from transformers import BertConfig, BertForPreTraining
    _seeded(0)
    config = BertConfig(**BERT_CONFIGS["small" if size == "small" else size],
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        attn_implementation="eager")
    model = BertForPreTraining(config)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, seq // 2:] = 1
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -3:] = 0
    labels = torch.full((batch, seq), -100, dtype=torch.long)
    labels[:, 1::4] = ids[:, 1::4]
    nsp = torch.randint(0, 2, (batch,))
    return ModelCase(f"bert_{size}", BertInference(model), (ids, types, mask),
                     BertPretrainingLoss(model), (ids, types, mask, labels, nsp))


# ---- speech (Hugging Face Wav2Vec2 + CTC) ------------------------------------------------
class Wav2Vec2CTCLoss(torch.nn.Module):
    """Wav2Vec2ForCTC's logits and its CTC loss, computed as HF's loss computes it
    (log-softmax in f32, blank = pad token, reduction from the config) but from padded
    targets with explicit lengths: HF's own path validates `labels.max()` and masks the
    labels with data-dependent shapes, which no ahead-of-time graph can express."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_values, labels, label_lengths):
        logits = self.model(input_values=input_values).logits
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
        frames = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long)
        config = self.model.config
        loss = F.ctc_loss(log_probs, labels, frames, label_lengths,
                          blank=config.pad_token_id, reduction=config.ctc_loss_reduction,
                          zero_infinity=config.ctc_zero_infinity)
        return logits, loss


class Wav2Vec2Inference(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_values):
        return self.model(input_values=input_values).logits


def wav2vec2_ctc(size="small", batch=2, samples=4000):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    _seeded(0)
    if size == "small":
        config = Wav2Vec2Config(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            conv_dim=(32, 32, 32), conv_stride=(5, 4, 2), conv_kernel=(10, 4, 2),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32,
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0,
            ctc_loss_reduction="mean", attn_implementation="eager")
    else:
        config = Wav2Vec2Config(
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0,
            ctc_loss_reduction="mean", vocab_size=32, attn_implementation="eager")
        samples = 16000
    model = Wav2Vec2ForCTC(config)
    x = torch.randn(batch, samples)
    labels = torch.randint(1, config.vocab_size, (batch, 6))
    lengths = torch.full((batch,), 6, dtype=torch.long)
    lengths[-1] = 4  # a shorter transcript; the padding after it is ignored
    return ModelCase(f"wav2vec2_{size}", Wav2Vec2Inference(model), (x,),
                     Wav2Vec2CTCLoss(model), (x, labels, lengths))


FAMILIES = {
    "resnet50": resnet50,
    "resnext50_32x4d": resnext50_32x4d,
    "efficientnet_b0": efficientnet_b0,
    "bert": bert_pretraining,
    "wav2vec2": wav2vec2_ctc,
}


# ---- the wider coverage sweep (docs/COVERAGE.md) -----------------------------------------
def torchvision_classifier(name, batch=2, resolution=64):
    """Any torchvision classification model by name, 10 classes, random weights."""
    import torchvision.models as tvm
    _seeded(0)
    kwargs = {"num_classes": 10}
    if name.startswith(("vit_", "swin_", "maxvit")) or name in ("inception_v3",):
        resolution = {"inception_v3": 299, "maxvit_t": 224}.get(name, 224)
    if name == "inception_v3" or name == "googlenet":
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    model = tvm.get_model(name, **kwargs)
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 10, (batch,))
    return ModelCase(name, model, (x,), WithLoss(model, F.cross_entropy), (x, y))


def timm_classifier(name, batch=2, resolution=64):
    import timm
    _seeded(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    size = model.default_cfg.get("input_size", (3, resolution, resolution))
    if "vit" in name or "deit" in name:
        resolution = size[-1]
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 10, (batch,))
    return ModelCase(f"timm/{name}", model, (x,), WithLoss(model, F.cross_entropy), (x, y))


class _LogitsOf(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


def hf_text_model(family, batch=2, seq=16):
    """A 2-layer Hugging Face model of `family` with an LM or classification head."""
    import transformers as tf
    _seeded(0)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, vocab_size=512)
    configs = {
        "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=64, n_layer=2, n_head=2,
                                                          vocab_size=512, n_positions=64)),
        "distilbert": lambda: tf.DistilBertForMaskedLM(tf.DistilBertConfig(
            dim=64, n_layers=2, n_heads=2, hidden_dim=128, vocab_size=512)),
        "roberta": lambda: tf.RobertaForMaskedLM(tf.RobertaConfig(
            **small, max_position_embeddings=64)),
        "albert": lambda: tf.AlbertForMaskedLM(tf.AlbertConfig(
            **small, embedding_size=32, max_position_embeddings=64)),
        "t5": lambda: tf.T5EncoderModel(tf.T5Config(d_model=64, d_kv=32, d_ff=128, num_layers=2,
                                                    num_heads=2, vocab_size=512)),
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
            **small, num_key_value_heads=2, max_position_embeddings=64)),
    }
    model = configs[family]()
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 512, (batch, seq))
    if family == "t5":
        class _Hidden(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.model = m

            def forward(self, input_ids):
                return self.model(input_ids=input_ids).last_hidden_state
        wrapped = _Hidden(model)
    else:
        wrapped = _LogitsOf(model)
    return ModelCase(f"hf/{family}", wrapped, (ids,))
