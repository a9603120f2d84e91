#pragma once
// Cleaning a thresholded car mask with what is known of the scene: a Carvana photo shows one car, whole,
// so its mask is mostly one connected region. Both steps work on one-channel masks whose nonzero
// bytes are "car", keep the mask's own values (0/1 or 0/255) and run in time linear in the pixels.
//
//   keep_largest_region: of the car's 8-connected regions (pixels touching by an edge or a corner),
//     keeps the largest and clears the others (ties: the first met in row-major order). Spurious blobs
//     on the floor or the wall go; a part of the car cut off from the rest by a missed line goes too,
//     which is why it is an option and not the default.
//   fill_holes: sets to car every background region (4-connected) that does not touch the border of
//     the image: holes inside the car (a window, a reflection) become car; background seen between the
//     car and the frame's edge stays.
//
// Both return the number of pixels they changed.
#include <cstdint>

#include "data/image.h"

namespace tl::train {

int64_t keep_largest_region(data::Image& mask);
int64_t fill_holes(data::Image& mask);

}  // namespace tl::train
