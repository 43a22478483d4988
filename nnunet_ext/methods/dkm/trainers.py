"""DKM (Lv et al., "Diffusion Kinetic Model for Breast Cancer Segmentation in Incomplete DCE-MRI", MICCAI 2023)
as nnU-Net trainers. Two-step training (Sect. 2.3):

1. ``DKMDiffusionTrainer`` trains the diffusion module (DM) on a DCE dataset (channel 0 pre-contrast x_0, the last
   time point the late post-contrast x_k, a ``SUB`` channel being no time point; labels unused):
   x_t = q_sample(x_0, t, eps) (Eq. 4) and eps_theta(x_t, t) is regressed onto
   eps_k = (x_t - sqrt(abar_t) x_k) / sqrt(1 - abar_t) (our reading of Eq. 6: the noise that relates x_t to x_k, so
   the reverse process lands on the post-contrast image). No intensity or spatial augmentation: the pre -> post
   intensity relation is the signal, and the paper trains without augmentation (Sect. 3). The DM never reads labels:
   nnU-Net's foreground oversampling is off, so patches are drawn uniformly whatever the label files hold (the DCE
   dataset's unlabelled cases carry all-background placeholders).
2. ``DKMTrainer`` trains the segmentation module (SM) on the pre-contrast-only dataset with the pretrained DM frozen
   inside the network (its weights are part of the SM checkpoint, so ``nnUNetv2_predict -tr DKMTrainer`` needs
   nothing else). Loss Eq. 7: CE + Dice + 0.5 (1 - SSIM), Adam with weight decay 1e-6 (Sect. 3). The frozen DM
   must see the SM's images preprocessed exactly as its own training images: ``DKMTrainer.initialize`` refuses a DM
   whose plans differ from the SM's in what reaches the DM (:func:`dm_preprocessing_mismatches`).

Where the SM finds the DM weights (training only), in this order:
- ``nnUNet_ext_dkm_dm_checkpoint=/path/checkpoint_final.pth`` if set;
- else ``$nnUNet_results/<DCE dataset>/<DM trainer>__<plans>__<configuration>/fold_<F>/checkpoint_final.pth`` where
  <DCE dataset> is the ``paired_dce_dataset`` key of the pre-only dataset's dataset.json (written by
  ``nnunet-ext synth --pre_only_id`` and the converters), <DM trainer> the class's ``dm_trainer`` and F
  ``nnUNet_ext_dkm_dm_fold`` (default ``all``: the DM is trained on every DCE case, ``nnUNetv2_train ID CONF all``).

Variants (stable names, stored in checkpoints): paper widths (DM 128-256-256-256, SM 128-256-512-1024) are the
defaults; ``_small`` variants use CPU-sized widths and a learning rate raised for short schedules. Ablation (Table 2):
``DKMTrainer_small_f<stages>`` fuse other kinetic-code subsets; ``DKMTrainerNoCode*`` is the baseline without
kinetic code (Fig. 4).

CUDA/AMP/DDP: ``train_step`` follows nnU-Net's (autocast on CUDA only, :meth:`ExtTrainerBase.backward_and_step` for
nnU-Net's GradScaler) and submodules are reached through ``self.network_module`` (nnU-Net wraps the network in DDP
and/or ``torch.compile``); validation splits its cases over DDP workers as nnU-Net does.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import nn

from nnunet_ext.losses.ssim import SSIMLoss, global_ssim
from nnunet_ext.methods.dkm.diffusion import LinearDiffusionSchedule
from nnunet_ext.methods.dkm.inference import image_similarity, synthesize_volume
from nnunet_ext.methods.dkm.network import DiffusionUNet, DKMSegmentationNet
from nnunet_ext.training.base import ExtTrainerBase
from nnunet_ext.training.pretrained import load_pretrained_checkpoint, preprocessing_mismatches


def _autocast(device: torch.device):
    """nnU-Net's pattern: fp16 autocast on CUDA only (slow on CPU, unsupported on MPS)."""
    return torch.autocast(device.type, enabled=True) if device.type == "cuda" else dummy_context()


def _gather_lists(values: list, is_ddp: bool) -> list:
    """Concatenate a per-worker list over all DDP workers (identity without DDP)."""
    if not is_ddp:
        return list(values)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(values))
    return [value for part in gathered for value in part]


def dm_preprocessing_mismatches(dm_init_args: dict, sm_plans: dict, sm_configuration: str,
                                channel: int = 0) -> list[str]:
    """What the frozen DM would see differently in the SM's data than in its own training data.

    The kinetic code f_i = DM features of x_t(x_0) (Eq. 4, Sect. 2.2) is only meaningful on inputs distributed like
    the DM's training inputs x_0, so the SM dataset's channel ``channel`` must be preprocessed like the DCE dataset's
    pre-contrast channel 0 (:func:`nnunet_ext.training.pretrained.preprocessing_mismatches`).

    Returns:
        One ``"<what> <DM value> (DM) vs <SM value> (SM)"`` entry per difference; empty when they match.
    """
    return preprocessing_mismatches(dm_init_args, sm_plans, sm_configuration, channel, names=("DM", "SM"))


class _NoAugmentation:
    """Mixin: nnU-Net's validation transforms for training and no test-time mirroring (Sect. 3: no augmentation)."""

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        return nnUNetTrainer.get_validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels,
                                                       regions, ignore_label)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, _, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, self.configuration_manager.patch_size, None


class DKMDiffusionTrainer(_NoAugmentation, ExtTrainerBase):
    """DKM step 1: the diffusion module on a DCE dataset (Sect. 2.1, Eq. 4 and 6)."""

    dm_widths: tuple[int, ...] = (128, 256, 256, 256)  # Sect. 3, following DDPM
    dm_num_res_blocks = 2
    post_phase = -1            # x_k: the late post-contrast phase (an index into the time points, not the channels)
    validation_timesteps = (50, 100, 200)
    initial_lr_default = 2e-4  # DDPM's Adam learning rate
    min_snr_gamma: float | None = 5.0  # loss weighting, see LinearDiffusionSchedule.min_snr_weight; None: plain Eq. 6
    conformance_overrides = {"dm_widths": (16, 32, 32, 32)}  # paper widths are too big for the CPU conformance suite

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        # Label-blind: nnU-Net would force a third of the patches onto foreground, i.e. read the label files; the
        # DM learns pre -> post on every case (the unlabelled ones carry all-background placeholders), so patches
        # are drawn uniformly. Set here, before initialize() adapts it per DDP worker (0 stays 0).
        self.oversample_foreground_percent = 0.0
        self.probabilistic_oversampling = False
        self.schedule = LinearDiffusionSchedule().to(self.device)

    @classmethod
    def build_dm(cls, spatial_dims: int) -> DiffusionUNet:
        return DiffusionUNet(spatial_dims=spatial_dims, widths=cls.dm_widths, num_res_blocks=cls.dm_num_res_blocks)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        return cls.build_dm(len(configuration_manager.patch_size))

    @classmethod
    def post_channel_of(cls, channel_names: dict, dataset_name: str = "the dataset") -> int:
        """The data channel of x_k: time point ``post_phase`` of the dataset's channels, where a ``SUB`` channel
        (post1 - pre, appended by ``--subtraction``) is no time point."""
        from nnunet_ext.datasets_conversion._dce_common import phase_channels

        phases = phase_channels(channel_names)
        if len(phases) < 2:
            raise RuntimeError(f"{cls.__name__} needs a DCE dataset (channel 0 pre-contrast, then post-contrast "
                               f"channels); {dataset_name} has {len(phases)} time point channel(s)")
        return phases[cls.post_phase]

    def initialize(self):
        if not self.was_initialized:
            self.post_channel = self.post_channel_of(self.dataset_json["channel_names"],
                                                     self.plans_manager.dataset_name)
        super().initialize()

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # the DM has a single output

    def _build_loss(self):
        return nn.MSELoss(reduction="none")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _pre_post(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        data = batch["data"].to(self.device, non_blocking=True)
        return data[:, [0]], data[:, [self.post_channel]]

    def _diffusion_loss(self, model: nn.Module, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """Eq. 6 with the kinetic target eps_k, min-SNR weighted: mean of w_t ||eps_theta(x_t, t) - eps_k||^2."""
        t = torch.randint(0, self.schedule.num_timesteps, (pre.shape[0],), device=self.device)
        x_t = self.schedule.q_sample(pre, t, torch.randn_like(pre))                     # Eq. 4
        target = self.schedule.kinetic_noise_target(x_t, post, t)                      # Eq. 6 (eps_k)
        # eps_k reaches ~sqrt(SNR_0) ~ 100 times the pre/post difference: square it in fp32, not in fp16 autocast
        squared_error = self.loss(model(x_t, t).float(), target.float())
        if self.min_snr_gamma is not None:
            squared_error = squared_error * self.schedule.min_snr_weight(t, x_t, self.min_snr_gamma)
        return squared_error.mean()

    def train_step(self, batch: dict) -> dict:
        pre, post = self._pre_post(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device):
            # self.network, not network_module: under DDP the wrapper's forward is what synchronises gradients
            loss = self._diffusion_loss(self.network, pre, post)
        self.backward_and_step(loss)  # nnU-Net's GradScaler on CUDA
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        pre, post = self._pre_post(batch)
        dm = self.network_module  # no gradients here: the bare DM, whatever nnU-Net wrapped it in
        with torch.no_grad(), _autocast(self.device):
            loss = self._diffusion_loss(dm, pre, post)
            estimate = self.schedule.synthesize_post(dm, pre, self.validation_timesteps).float()
            # SSIM of standardized patches: comparable across epochs whatever the intensity scale
            ssim = global_ssim(estimate, post, data_range=float(post.max() - post.min()) or 1.0)
        return {"loss": loss.detach().cpu().numpy(), "ssim": ssim.mean().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        # as nnU-Net: every DDP worker validated its own batches, the logged value is over all of them
        loss = float(np.mean(_gather_lists([float(o["loss"]) for o in val_outputs], self.is_ddp)))
        ssim = float(np.mean(_gather_lists([float(o["ssim"]) for o in val_outputs], self.is_ddp)))
        # nnU-Net's progress plot and best-checkpoint logic read 'mean_fg_dice': for the DM it holds the validation
        # SSIM of the synthesized post-contrast patch
        self.logger.log("mean_fg_dice", ssim, self.current_epoch)
        self.logger.log("dice_per_class_or_region", [ssim], self.current_epoch)
        self.logger.log("val_losses", loss, self.current_epoch)

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Synthesize the post-contrast image of every validation case (preprocessed space) and write PSNR/SSIM.

        Under DDP each worker takes every world_size-th case (as nnU-Net's validation does) and worker 0 writes the
        summary of all of them."""
        dm = self.network_module
        dm.eval()
        _, val_keys = self.do_split()
        if self.is_ddp:
            val_keys = val_keys[self.local_rank::dist.get_world_size()]
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        results = []
        for key in val_keys:
            data, _, _, _ = dataset.load_case(key)
            volume = torch.from_numpy(np.asarray(data, dtype=np.float32)).to(self.device)
            estimate = synthesize_volume(dm, self.schedule, volume[0],
                                         self.configuration_manager.patch_size, self.validation_timesteps)
            reference = volume[self.post_channel].cpu().numpy()
            results.append((key, image_similarity(estimate.float().cpu().numpy(), reference)))
        per_case = dict(sorted(_gather_lists(results, self.is_ddp)))
        if self.local_rank != 0:
            return
        mean = {m: float(np.mean([c[m] for c in per_case.values()])) for m in ("PSNR", "SSIM")}
        folder = Path(self.output_folder) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps({"post_synthesis_mean": mean, "per_case": per_case},
                                                        indent=2))
        self.print_to_log_file(f"post-contrast synthesis on {len(per_case)} validation cases: {mean}")


class DKMDiffusionTrainer_small(DKMDiffusionTrainer):
    """CPU-sized DM: widths 16-32-32-32, one residual block per stage, Adam 1e-3 for short schedules."""

    dm_widths = (16, 32, 32, 32)
    dm_num_res_blocks = 1
    initial_lr_default = 1e-3


class DKMTrainer(ExtTrainerBase):
    """DKM step 2: the segmentation module with the frozen DM's kinetic code f3 + f4 (Sect. 2.2, Eq. 5 and 7)."""

    dm_trainer: type[DKMDiffusionTrainer] | None = DKMDiffusionTrainer
    sm_widths: tuple[int, ...] = (128, 256, 512, 1024)  # Sect. 3
    code_stages: tuple[int, ...] = (3, 4)                # Table 2: best subset
    ssim_weight = 0.5                                    # lambda of Eq. 7
    initial_lr_default = 2e-5                            # Sect. 3: Adam, lr 2e-5, weight decay 1e-6
    num_epochs_default = 500                             # Sect. 3
    weight_decay_adam = 1e-6
    conformance_overrides = {"sm_widths": (16, 32, 64, 128)}  # paper widths are too big for the CPU conformance suite

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # the SM has a single output (Fig. 2(b))

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        spatial_dims = len(configuration_manager.patch_size)
        use_code = cls.dm_trainer is not None and len(cls.code_stages) > 0
        return DKMSegmentationNet(num_input_channels, num_output_channels, widths=cls.sm_widths,
                                  dm=cls.dm_trainer.build_dm(spatial_dims) if use_code else None,
                                  code_stages=cls.code_stages if use_code else (), spatial_dims=spatial_dims,
                                  deep_supervision=enable_deep_supervision)

    def dm_checkpoint_path(self) -> Path:
        explicit = os.environ.get("nnUNet_ext_dkm_dm_checkpoint")
        if explicit:
            return Path(explicit)
        paired = self.dataset_json.get("paired_dce_dataset")
        if not paired:
            raise RuntimeError(f"{self.__class__.__name__}: set nnUNet_ext_dkm_dm_checkpoint to the diffusion module's "
                               "checkpoint, or add 'paired_dce_dataset' to the dataset.json of "
                               f"{self.plans_manager.dataset_name}")
        fold = os.environ.get("nnUNet_ext_dkm_dm_fold", "all")
        from nnunetv2.paths import nnUNet_results
        return (Path(nnUNet_results) / paired / f"{self.dm_trainer.__name__}__{self.plans_manager.plans_name}__"
                f"{self.configuration_name}" / f"fold_{fold}" / "checkpoint_final.pth")

    def initialize(self):
        was_initialized = self.was_initialized
        super().initialize()
        # network_module: nnU-Net has wrapped the network in DDP / torch.compile by now
        if was_initialized or self.network_module.dm is None:
            return
        path = self.dm_checkpoint_path()
        checkpoint = load_pretrained_checkpoint(
            path, self.__class__.__name__, "diffusion module", self.dm_trainer.__name__,
            f"train it with nnUNetv2_train <DCE dataset> {self.configuration_name} all -tr {self.dm_trainer.__name__}, "
            "or set nnUNet_ext_dkm_dm_checkpoint", self.device)
        self.check_dm_preprocessing(checkpoint, path)
        self.network_module.load_dm_state(checkpoint["network_weights"])
        self.print_to_log_file(f"DKM: loaded the frozen diffusion module from {path}")

    def check_dm_preprocessing(self, checkpoint: dict, path: Path | str) -> None:
        """Refuse a DM trained on differently preprocessed images (:func:`dm_preprocessing_mismatches`)."""
        init_args = checkpoint["init_args"]  # present: load_pretrained_checkpoint checked it
        mismatches = dm_preprocessing_mismatches(init_args, self.plans_manager.plans, self.configuration_name,
                                                 self.network_module.dm_input_channel)
        if mismatches:
            dm_dataset = init_args["plans"].get("dataset_name", "the DCE dataset")
            dm_plans = init_args["plans"].get("plans_name", "PLANS")
            sm_dataset, sm_plans = self.plans_manager.dataset_name, self.plans_manager.plans_name
            raise RuntimeError(
                f"{self.__class__.__name__}: the diffusion module {path} saw differently preprocessed images than "
                f"{sm_dataset} ({sm_plans}, {self.configuration_name}) provides: {'; '.join(mismatches)}. Plan both "
                f"datasets together with the same planner (nnunet-ext plan_and_preprocess -d DCE_ID PRE_ID -pl "
                f"PLANNER), or copy the DCE plans (nnUNetv2_move_plans_between_datasets -s {dm_dataset} -t "
                f"{sm_dataset} -sp {dm_plans} -tp {sm_plans}, then nnUNetv2_preprocess -d {sm_dataset} -plans_name "
                f"{sm_plans} -c {self.configuration_name})")

    def set_deep_supervision_enabled(self, enabled: bool):
        # nnU-Net's version reaches the decoder through self.network.module only when is_ddp; network_module
        # unwraps whatever wrapper there is
        self.network_module.decoder.deep_supervision = enabled

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network_module.trainable_parameters(), lr=self.initial_lr,
                                     weight_decay=self.weight_decay_adam)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _build_loss(self):
        segmentation = DC_and_CE_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5,
                                       "do_bg": False, "ddp": self.is_ddp}, {}, weight_ce=1, weight_dice=1,
                                      ignore_label=self.label_manager.ignore_label,
                                      dice_class=MemoryEfficientSoftDiceLoss)
        return DKMLoss(segmentation, SSIMLoss(ignore_label=self.label_manager.ignore_label), self.ssim_weight)


class DKMLoss(nn.Module):
    """Eq. 7: L_SM = L_CE(S, G) + L_Dice(S, G) + lambda (1 - SSIM(S, G))."""

    def __init__(self, segmentation: nn.Module, ssim: nn.Module, ssim_weight: float):
        super().__init__()
        self.segmentation, self.ssim, self.ssim_weight = segmentation, ssim, ssim_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.segmentation(logits, target) + self.ssim_weight * self.ssim(logits, target)


class DKMTrainerNoCode(DKMTrainer):
    """Ablation: the same SM without kinetic code (the "baseline" of Fig. 4)."""

    dm_trainer = None
    code_stages = ()


class DKMTrainer_small(DKMTrainer):
    """CPU-sized DKM: SM widths 16-32-64-128 on the ``DKMDiffusionTrainer_small`` DM, Adam 1e-3 for short
    schedules (the paper's 2e-5 is meant for 500 epochs)."""

    dm_trainer = DKMDiffusionTrainer_small
    sm_widths = (16, 32, 64, 128)
    initial_lr_default = 1e-3


class DKMTrainerNoCode_small(DKMTrainer_small):
    dm_trainer = None
    code_stages = ()


# Table 2 ablation on the CPU-sized model: the kinetic-code stages fused into the SM
class DKMTrainer_small_f1(DKMTrainer_small):
    code_stages = (1,)


class DKMTrainer_small_f2(DKMTrainer_small):
    code_stages = (2,)


class DKMTrainer_small_f3(DKMTrainer_small):
    code_stages = (3,)


class DKMTrainer_small_f4(DKMTrainer_small):
    code_stages = (4,)


class DKMTrainer_small_f2f4(DKMTrainer_small):
    code_stages = (2, 4)


class DKMTrainer_small_f1f2f3f4(DKMTrainer_small):
    code_stages = (1, 2, 3, 4)
