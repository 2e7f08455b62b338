# Smoke config for the MMDetection-port stand-in (tools/train.py): an MMDetection 2.x style Python config.
# The model is torchvision's SSDlite (MobileNetV3) at 160 px, which learns on a tiny generated set in CI time;
# model.type SSD300VGG16 selects the seed's SSD300 (VGG16) architecture, which needs >= 268 px and ~3 s/iter.
# bn_momentum 0.5: on 48 steps the running statistics lag the weights at 0.1 (val mAP 0.003; 0.07-0.12 at 0.5).
model = dict(type="SSDLite320MobileNetV3", num_classes=3, img_size=160, bn_momentum=0.5)
dataset_type = "CocoDataset"
data_root = "data/coco/"
data = dict(
    samples_per_gpu=4,
    workers_per_gpu=0,
    # The port's ssd300_coco.py layout (a RepeatDataset around the train set, a test set beside val), so that
    # the recipe's --cfg-options keys are the production ones.
    train=dict(type="RepeatDataset", times=1,
               dataset=dict(type=dataset_type, ann_file=data_root + "annotations/instances_train2017.json",
                            img_prefix=data_root + "train2017/")),
    val=dict(type=dataset_type, ann_file=data_root + "annotations/instances_val2017.json",
             img_prefix=data_root + "val2017/"),
    test=dict(type=dataset_type, ann_file=data_root + "annotations/instances_val2017.json",
              img_prefix=data_root + "val2017/"),
)
# FACTS: AdamW 2e-3 with cosine decay learns this set; a constant lr left eval-mode mAP near zero.
optimizer = dict(type="AdamW", lr=2e-3, weight_decay=1e-4)
optimizer_config = dict(grad_clip=dict(max_norm=10.0))
lr_config = dict(policy="CosineAnnealing", min_lr=1e-5)
total_epochs = 24  # MMDetection 2.6 (the port): total_epochs, not runner.max_epochs
checkpoint_config = dict(interval=1)
log_config = dict(interval=1)
evaluation = dict(interval=6, metric="bbox")
