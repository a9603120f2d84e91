// stb's implementation, compiled from its headers: used only when no compiled stb library is found
// (a machine that carries the headers in a folder, see TL_DEPS_PREFIX). Debian's libstb-dev ships
// libstb, which is linked instead.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_write.h>
