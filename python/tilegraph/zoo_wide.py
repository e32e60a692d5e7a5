"""The models of the wider coverage sweep (tools/coverage_sweep.py, docs/COVERAGE.md).

Each builder returns a `tilegraph.zoo.ModelCase` built the way a user builds the model:
torchvision and timm classifiers and segmenters by name, Hugging Face models from a small
config of their family with their standard heads, called with their own `labels=` losses and
the default (sdpa) attention. Random weights (nothing is downloaded); dropout and stochastic
depth are set to 0 so that training can be compared with eager PyTorch step by step (random
draws cannot match torch's generator; their statistics are tested elsewhere).
"""
import torch
import torch.nn.functional as F

from .zoo import ModelCase, WithLoss, _seeded


def without_dropout(model):
    """Sets every dropout / stochastic-depth / drop-path probability in `model` to 0."""
    for module in model.modules():
        kind = type(module).__name__.lower()
        if "drop" not in kind and "stochasticdepth" not in kind:
            continue
        for attr in ("p", "drop_prob"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)
    return model


# ---- torchvision -------------------------------------------------------------------------
# Resolutions where 64x64 is not enough (fixed positional embeddings or window partitions).
_TV_RESOLUTION = {"inception_v3": 299, "maxvit_t": 224}


def torchvision_classifier(name, batch=2, resolution=64):
    """Any torchvision classification model by name, 10 classes. ViTs are built for the
    sweep's resolution (their `image_size` argument) instead of 224."""
    import torchvision.models as tvm
    _seeded(0)
    kwargs = {"num_classes": 10}
    resolution = _TV_RESOLUTION.get(name, resolution)
    if name.startswith("vit_"):
        kwargs["image_size"] = resolution
    if name in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=False)
    model = without_dropout(tvm.get_model(name, **kwargs))
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 10, (batch,))
    return ModelCase(name, model, (x,), WithLoss(model, F.cross_entropy), (x, y))


class _SegmentationOut(torch.nn.Module):
    """torchvision segmenters return {"out": ...}: the per-pixel logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def _pixel_loss(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255)


def torchvision_segmenter(name, batch=2, resolution=64):
    """torchvision.models.segmentation by name (5 classes, no auxiliary head, no pretrained
    backbone), trained with per-pixel cross-entropy that ignores label 255."""
    import torchvision.models.segmentation as seg
    _seeded(0)
    model = without_dropout(getattr(seg, name)(num_classes=5, weights=None,
                                               weights_backbone=None, aux_loss=None))
    model = _SegmentationOut(model)
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 5, (batch, resolution, resolution))
    y[:, :4] = 255
    return ModelCase(name, model, (x,), WithLoss(model, _pixel_loss), (x, y))


# ---- timm ---------------------------------------------------------------------------------
def timm_classifier(name, batch=2, resolution=64):
    """A timm model by name, 10 classes; models with a fixed input size get theirs."""
    import timm
    _seeded(0)
    model = without_dropout(timm.create_model(name, pretrained=False, num_classes=10))
    if getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False):
        resolution = model.pretrained_cfg["input_size"][-1]
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 10, (batch,))
    return ModelCase(f"timm/{name}", model, (x,), WithLoss(model, F.cross_entropy), (x, y))


# ---- Hugging Face transformers --------------------------------------------------------------
VOCAB, SEQ = 256, 16
_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _hf_configs(tf):
    """family/head -> (model class, config): the smallest configuration of each family that
    keeps its structure (2 layers, 2 heads, width 64)."""
    llama = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, intermediate_size=128, vocab_size=VOCAB,
                 max_position_embeddings=64)
    seq2seq = dict(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2,
                   encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                   decoder_ffn_dim=128, max_position_embeddings=64, dropout=0.0,
                   attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1,
                   decoder_start_token_id=2, bos_token_id=0, eos_token_id=2)
    gpt2 = dict(n_embd=64, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=64,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                eos_token_id=0)
    return {
        "gpt2/CausalLM": (tf.GPT2LMHeadModel, tf.GPT2Config(**gpt2)),
        "gpt2/SequenceClassification": (tf.GPT2ForSequenceClassification,
                                        tf.GPT2Config(**gpt2, pad_token_id=0)),
        "llama/CausalLM": (tf.LlamaForCausalLM, tf.LlamaConfig(**llama)),
        "mistral/CausalLM": (tf.MistralForCausalLM, tf.MistralConfig(**llama)),
        "qwen2/CausalLM": (tf.Qwen2ForCausalLM, tf.Qwen2Config(**llama)),
        "bert/PreTraining": (tf.BertForPreTraining, tf.BertConfig(**_SMALL)),
        "bert/SequenceClassification": (tf.BertForSequenceClassification,
                                        tf.BertConfig(**_SMALL)),
        "bert/QuestionAnswering": (tf.BertForQuestionAnswering, tf.BertConfig(**_SMALL)),
        "bert/TokenClassification": (tf.BertForTokenClassification, tf.BertConfig(**_SMALL)),
        "roberta/MaskedLM": (tf.RobertaForMaskedLM, tf.RobertaConfig(**_SMALL)),
        "roberta/SequenceClassification": (tf.RobertaForSequenceClassification,
                                           tf.RobertaConfig(**_SMALL)),
        "distilbert/QuestionAnswering": (tf.DistilBertForQuestionAnswering, tf.DistilBertConfig(
            dim=64, n_layers=2, n_heads=2, hidden_dim=128, vocab_size=VOCAB, dropout=0.0,
            attention_dropout=0.0, qa_dropout=0.0)),
        "albert/MaskedLM": (tf.AlbertForMaskedLM, tf.AlbertConfig(**_SMALL, embedding_size=32)),
        "electra/PreTraining": (tf.ElectraForPreTraining, tf.ElectraConfig(
            **_SMALL, embedding_size=32)),
        "t5/ConditionalGeneration": (tf.T5ForConditionalGeneration, tf.T5Config(
            d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2, vocab_size=VOCAB,
            dropout_rate=0.0, decoder_start_token_id=0)),
        "bart/ConditionalGeneration": (tf.BartForConditionalGeneration,
                                       tf.BartConfig(**seq2seq)),
        "vit/ImageClassification": (tf.ViTForImageClassification, tf.ViTConfig(
            **{k: v for k, v in _SMALL.items() if k not in ("vocab_size",
                                                             "max_position_embeddings")},
            image_size=32, patch_size=8, num_labels=10)),
        "segformer/SemanticSegmentation": (tf.SegformerForSemanticSegmentation,
                                           tf.SegformerConfig(
            num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
            patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
            mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=5, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
            drop_path_rate=0.0)),
    }


HF_MODELS = ["gpt2/CausalLM", "gpt2/SequenceClassification", "llama/CausalLM",
             "mistral/CausalLM", "qwen2/CausalLM", "bert/PreTraining",
             "bert/SequenceClassification", "bert/QuestionAnswering", "bert/TokenClassification",
             "roberta/MaskedLM", "roberta/SequenceClassification", "distilbert/QuestionAnswering",
             "albert/MaskedLM", "electra/PreTraining", "t5/ConditionalGeneration",
             "bart/ConditionalGeneration", "vit/ImageClassification",
             "segformer/SemanticSegmentation"]


class HFCall(torch.nn.Module):
    """Calls a Hugging Face model with keyword arguments, as scripts do:
    forward(*values) -> model(**dict(zip(names, values)), use_cache=False where the model
    takes it), returning its ModelOutput (in training, `.loss` is the loss)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, *values):
        kwargs = dict(zip(self.names, values))
        if getattr(self.model.config, "use_cache", None) is not None:
            kwargs["use_cache"] = False
        return self.model(**kwargs)


def _hf_labels(head, config, ids, batch, g):
    if head in ("CausalLM",):
        return {"labels": ids}
    if head == "PreTraining" and config.model_type == "electra":  # replaced-token labels
        return {"labels": torch.randint(0, 2, ids.shape, generator=g)}
    if head in ("MaskedLM", "PreTraining", "TokenClassification"):
        labels = torch.full_like(ids, -100)
        classes = config.num_labels if head == "TokenClassification" else VOCAB
        labels[:, 1::3] = torch.randint(0, classes, labels[:, 1::3].shape, generator=g)
        if head == "PreTraining":  # BERT: masked LM + next sentence
            return {"labels": labels,
                    "next_sentence_label": torch.randint(0, 2, (batch,), generator=g)}
        return {"labels": labels}
    if head in ("SequenceClassification", "ImageClassification"):
        return {"labels": torch.randint(0, config.num_labels, (batch,), generator=g)}
    if head == "QuestionAnswering":
        return {"start_positions": torch.randint(0, SEQ, (batch,), generator=g),
                "end_positions": torch.randint(0, SEQ, (batch,), generator=g)}
    if head == "ConditionalGeneration":
        return {"labels": torch.randint(3, VOCAB, (batch, SEQ // 2), generator=g)}
    if head == "SemanticSegmentation":
        labels = torch.randint(0, config.num_labels, (batch, 32, 32), generator=g)
        labels[:, :2] = 255
        return {"labels": labels}
    raise KeyError(head)


def hf_model(spec, batch=2):
    """A Hugging Face `family/Head` model (HF_MODELS) with inputs and its own loss."""
    import transformers as tf
    family, head = spec.split("/")
    _seeded(0)
    cls, config = _hf_configs(tf)[spec]
    model = without_dropout(cls(config))
    g = torch.Generator().manual_seed(1)
    if head in ("ImageClassification", "SemanticSegmentation"):
        inputs = {"pixel_values": torch.randn(batch, 3, 32, 32, generator=g)}
    else:
        ids = torch.randint(3, VOCAB, (batch, SEQ), generator=g)
        mask = torch.ones(batch, SEQ, dtype=torch.long)
        mask[-1, -3:] = 0  # a padded sequence
        inputs = {"input_ids": ids, "attention_mask": mask}
        if head == "CausalLM":
            inputs.pop("attention_mask")
    labels = _hf_labels(head, config, inputs.get("input_ids"), batch, g)
    infer_inputs = dict(inputs)
    if head == "ConditionalGeneration":  # the decoder's inputs, which labels imply in training
        infer_inputs["decoder_input_ids"] = torch.randint(3, VOCAB, (batch, SEQ // 2),
                                                          generator=g)
    return ModelCase(f"hf/{spec}", HFCall(model, infer_inputs), tuple(infer_inputs.values()),
                     HFCall(model, list(inputs) + list(labels)),
                     tuple(inputs.values()) + tuple(labels.values()))


def family(name):
    """One of tilegraph.zoo.FAMILIES (the issue's model families), dropout removed."""
    from .zoo import FAMILIES
    case = FAMILIES[name]()
    without_dropout(case.model)
    if case.train_model is not None:
        without_dropout(case.train_model)
    return case
